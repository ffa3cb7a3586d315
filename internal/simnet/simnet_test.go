package simnet

import (
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sgrelay/sg/internal/workload"
)

// vmSpec is a generated VM of mib MiB of memory: 30% zero, 10% repeated.
func vmSpec(name string, seed uint64, mib int64) VMSpec {
	return VMSpec{Name: name, Spec: workload.Spec{Seed: seed, BaseSeed: 1, MemSize: mib << 20, PageSize: 4096,
		ZeroFrac: 0.3, RepeatFrac: 0.1}}
}

func smallTopology() *Topology {
	return &Topology{
		Nodes: []NodeSpec{
			{Name: "src", Role: Source, UpMbps: 1000, DownMbps: 1000},
			{Name: "dst", Role: Destination, UpMbps: 1000, DownMbps: 200},
			{Name: "mid", Role: Intermediate, UpMbps: 1000, DownMbps: 1000},
		},
		Latency: LatencySpec{Default: Duration(time.Millisecond)},
		VMs:     []VMSpec{vmSpec("vm", 1, 32)},
		Gather:  GatherSpec{Verify: true, Trace: TraceSpec{Reads: 200, Think: Duration(time.Millisecond)}},
		Seed:    1,
	}
}

// One eviction end to end on the harness: the VM arrives byte for byte,
// the source sent each unique chunk once, the numbers are consistent.
func TestSmallEviction(t *testing.T) {
	t.Parallel()
	res := simulate(t, smallTopology())
	reads, faults := res.DemandReads()
	t.Logf("ET %v TMT %v downtime %v unique %d holders %v reads %d faults %d", res.ET, res.TMT, res.Downtime, res.UniqueBytes, res.HolderBytes, reads, faults)
	if !res.Verified {
		t.Fatal("not verified")
	}
	if res.ET <= 0 || res.TMT < res.ET || res.Downtime <= 0 || res.Downtime > res.TMT {
		t.Fatalf("ET %v, TMT %v, downtime %v: want 0 < downtime ≤ TMT, ET ≤ TMT", res.ET, res.TMT, res.Downtime)
	}
	if res.Evict.UniqueBytes != res.UniqueBytes {
		t.Fatalf("eviction counted %d unique bytes, the harness %d", res.Evict.UniqueBytes, res.UniqueBytes)
	}
	if reads != 200 || res.Trace.Reads != 200 {
		t.Fatalf("%d demand reads, %d trace reads; want 200", reads, res.Trace.Reads)
	}
	// The 200 Mbit/s destination alone would need this long.
	if alone := ideal(res.UniqueBytes, 200); res.ET >= alone {
		t.Fatalf("ET %v not below the destination-only time %v: the relay did not help", res.ET, alone)
	}
}

// The same scenario gives the same figures. Goroutines that wake at the
// same virtual instant run in no fixed order, so figures may differ by a
// hair (a few percent, measured); they must agree within 5%.
func TestRepeatable(t *testing.T) {
	t.Parallel()
	a, b := simulate(t, smallTopology()), simulate(t, smallTopology())
	for _, c := range []struct {
		name string
		x, y time.Duration
	}{{"ET", a.ET, b.ET}, {"TMT", a.TMT, b.TMT}} {
		t.Logf("%s: %v and %v", c.name, c.x, c.y)
		// Goroutines that run at one virtual instant run in no fixed
		// order, so runs are not bit-identical. Measured over 26 runs:
		// ET 181.2-186.1 ms (2.7% apart), TMT 854-869 ms (1.8%).
		tol := 0.04
		if d := math.Abs(c.x.Seconds()/c.y.Seconds() - 1); d > tol {
			t.Errorf("%s differs by %.2f%% between two runs: %v vs %v", c.name, d*100, c.x, c.y)
		}
	}
	if a.UniqueBytes != b.UniqueBytes || a.Sent("src") == 0 {
		t.Errorf("unique bytes %d vs %d", a.UniqueBytes, b.UniqueBytes)
	}
}

// A cut link and a lost packet in every hundred: the eviction and the
// gather still complete and verify (QUIC retransmits; the cut relay is
// replaced).
func TestLossAndCut(t *testing.T) {
	t.Parallel()
	topo := smallTopology()
	topo.Nodes = append(topo.Nodes, NodeSpec{Name: "mid2", Role: Intermediate, UpMbps: 1000, DownMbps: 1000, Loss: 0.01})
	topo.Nodes[0].Loss = 0.01
	topo.Faults = []Fault{{At: Duration(100 * time.Millisecond), Cut: []string{"src", "mid"}}}
	topo.Gather.Trace = TraceSpec{}
	res := simulate(t, topo)
	t.Logf("ET %v TMT %v repaired %d holders %v", res.ET, res.TMT, res.Evict.Repaired, res.HolderBytes)
	if !res.Verified {
		t.Fatal("not verified")
	}
}

func TestTopologyErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*Topology)
	}{
		{"no source", func(tp *Topology) { tp.Nodes[0].Role = Bystander }},
		{"unknown role", func(tp *Topology) { tp.Nodes[2].Role = "relay" }},
		{"duplicate name", func(tp *Topology) { tp.Nodes[2].Name = "dst" }},
		{"zero bandwidth", func(tp *Topology) { tp.Nodes[1].DownMbps = 0 }},
		{"loss of one", func(tp *Topology) { tp.Nodes[1].Loss = 1 }},
		{"unknown via", func(tp *Topology) { tp.Evict.Via = []string{"nobody"} }},
		{"bad fault", func(tp *Topology) { tp.Faults = []Fault{{Kill: "mid", Cut: []string{"a", "b"}}} }},
		{"bad vm", func(tp *Topology) { tp.VMs[0].MemSize = 1000 }},
	} {
		tp := smallTopology()
		c.edit(tp)
		if err := tp.Validate(); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	if err := smallTopology().Validate(); err != nil {
		t.Fatalf("valid topology refused: %v", err)
	}
}

// An intermediate crashes mid-scatter (its packets vanish; its connection
// is not closed): the source gives it up after its stall limit, repairs
// what it had acknowledged, and the destination still gets the VM whole.
func TestRelayKilledMidScatter(t *testing.T) {
	t.Parallel()
	topo := smallTopology()
	topo.Nodes = append(topo.Nodes, NodeSpec{Name: "mid2", Role: Intermediate, UpMbps: 1000, DownMbps: 1000})
	topo.Faults = []Fault{{At: Duration(100 * time.Millisecond), Kill: "mid"}}
	topo.Gather.Trace = TraceSpec{}
	res := simulate(t, topo)
	t.Logf("ET %v TMT %v repaired %d holders %v", res.ET, res.TMT, res.Evict.Repaired, res.HolderBytes)
	if !res.Verified {
		t.Fatal("not verified")
	}
	if res.Evict.Repaired == 0 {
		t.Fatal("nothing repaired: mid held no acknowledged chunk when it died?")
	}
	if res.HolderBytes["mid"] != 0 {
		t.Fatalf("the destination fetched %d bytes from the dead relay", res.HolderBytes["mid"])
	}
}

// quic-go discovers the path MTU over the simulated links (through the
// spare socket it sets DF on), so packets are as large as on a real host,
// not its 1280-byte floor.
func TestPathMTUDiscovered(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c, _ := runCluster(t, smallTopology())
		largest := c.nodes[0].conn.largestPacket()
		t.Logf("largest packet the source sent: %d bytes", largest)
		if largest <= 1280 || largest > 1452 {
			t.Errorf("largest packet %d bytes; want above quic-go's 1280-byte floor, at most its 1452-byte limit", largest)
		}
	})
}

// A relay that remembers none of its pushes' IDs: the destination cannot
// place the pushes the source placed by digest there, so it cannot build
// the manifest at Done; the source sends it, and the VM arrives whole.
func TestForgetfulRelay(t *testing.T) {
	t.Parallel()
	topo := smallTopology()
	topo.Nodes[2].ForgetPushes = true
	res := simulate(t, topo)
	t.Logf("ET %v, manifest pushed %d bytes, verified %v", res.ET, res.Evict.ManifestPushed, res.Verified)
	if !res.Verified {
		t.Fatal("not verified")
	}
	if res.Evict.ManifestPushed == 0 {
		t.Fatal("no manifest pushed: the destination placed pushes no holder could describe")
	}
}
