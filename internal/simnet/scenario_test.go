package simnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sgrelay/sg/internal/units"
)

// TestScenarioFile runs the scenario file SG_SCENARIO names and prints what
// it measured (SG_JSON=1: the whole Result as JSON).
func TestScenarioFile(t *testing.T) {
	path := os.Getenv("SG_SCENARIO")
	if path == "" {
		t.Skip("SG_SCENARIO=<file.toml> runs a scenario file (examples in internal/simnet/scenarios)")
	}
	topo, err := LoadTopology(path)
	if err != nil {
		t.Fatal(err)
	}
	res := simulate(t, topo)
	if os.Getenv("SG_JSON") != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("\n%s", b)
		return
	}
	t.Logf("\n%s", summary(topo, res))
}

// summary is a scenario's results for people.
func summary(topo *Topology, res *Result) string {
	var b strings.Builder
	p := func(format string, a ...any) { b.WriteString(strings.TrimSpace(fmt.Sprintf(format, a...)) + "\n") }
	p("eviction time (source free)   %v", res.ET.Round(time.Microsecond))
	p("total migration time          %v", res.TMT.Round(time.Microsecond))
	p("downtime                      %v", res.Downtime.Round(time.Microsecond))
	p("VM bytes %s, non-zero %s, unique %s", units.FormatSize(res.VMBytes), units.FormatSize(res.NonZeroBytes), units.FormatSize(res.UniqueBytes))
	for _, n := range topo.Nodes {
		p("%-12s sent %10s  received %10s", n.Name, units.FormatSize(res.Sent(n.Name)), units.FormatSize(res.Received(n.Name)))
	}
	holders := make([]string, 0, len(res.HolderBytes))
	for h := range res.HolderBytes {
		holders = append(holders, h)
	}
	slices.Sort(holders)
	for _, h := range holders {
		p("fetched from %-12s %s", h, units.FormatSize(res.HolderBytes[h]))
	}
	reads, faults := res.DemandReads()
	p("guest reads served on demand  %d, of which crossed the network %d", reads, faults)
	p("verified byte for byte        %v", res.Verified)
	return b.String()
}

// Every example scenario loads and validates, with its sizes parsed.
func TestScenarioFilesLoad(t *testing.T) {
	files, err := filepath.Glob("scenarios/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenario files: %v", err)
	}
	for _, f := range files {
		topo, err := LoadTopology(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		for _, v := range topo.VMs {
			if v.MemSize < 1<<20 || v.PageSize != 4096 {
				t.Errorf("%s: vm %s has %d bytes of memory in %d-byte pages", f, v.Name, v.MemSize, v.PageSize)
			}
		}
	}
}

// The small example runs end to end and says what the Go value of the
// same scenario says.
func TestScenarioSmallRuns(t *testing.T) {
	t.Parallel()
	topo, err := LoadTopology("scenarios/small.toml")
	if err != nil {
		t.Fatal(err)
	}
	if v := topo.VMs[0]; v.MemSize != 16<<20 || v.ZeroFrac != 0.3 || v.BaseSeed != 100 {
		t.Fatalf("vm parsed as %+v", v.Spec)
	}
	if topo.Latency.Default != Duration(time.Millisecond) || topo.Gather.Trace.Think != Duration(time.Millisecond) {
		t.Fatalf("latency %v, think %v; want 1ms each", topo.Latency.Default, topo.Gather.Trace.Think)
	}
	res := simulate(t, topo)
	t.Logf("\n%s", summary(topo, res))
	if !res.Verified || res.ET <= 0 || res.TMT < res.ET {
		t.Fatalf("verified %v, ET %v, TMT %v", res.Verified, res.ET, res.TMT)
	}
	if reads, _ := res.DemandReads(); reads != 200 {
		t.Fatalf("%d demand reads, want the trace's 200", reads)
	}
}

func TestParseTopologyErrors(t *testing.T) {
	const nodes = `
[[node]]
name = "src"
role = "source"
up_mbps = 1000
down_mbps = 1000
[[node]]
name = "dst"
role = "destination"
up_mbps = 1000
down_mbps = 100
`
	const vm = `
[[vm]]
name = "vm"
mem = "4MiB"
`
	for _, c := range []struct{ name, text, want string }{
		{"a misspelt key", nodes + vm + "[evict]\nreplica = 2\n", "unknown keys: evict.replica"},
		{"a size without a number", nodes + strings.Replace(vm, `"4MiB"`, `"MiB"`, 1), "size"},
		{"a bad duration", nodes + vm + "[latency]\ndefault = \"1 fortnight\"\n", "duration"},
		{"a second source", strings.Replace(nodes, `"destination"`, `"source"`, 1) + vm, "exactly one source"},
		{"no VM", nodes, "no VM"},
		{"a page size that does not divide memory", nodes + vm + "page_size = 3000\n", "multiple of page size"},
		{"not TOML", "[[node]\n", "toml"},
	} {
		_, err := ParseTopology(c.text)
		t.Logf("%s: %v", c.name, err)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.want)
		}
	}
	if _, err := LoadTopology("scenarios/no-such-file.toml"); err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
