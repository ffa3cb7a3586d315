package simnet

// The Scatter-Gather results reproduced in virtual time, scaled down so
// each run takes seconds: `go test ./simnet -run Paper -v` prints the
// tables; SG_PLOT=FILE.png also draws ET and TMT against destination
// bandwidth.

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sgrelay/sg/internal/workload"
)

const srcMbps = 1000

// simulate runs topo in its own bubble.
func simulate(t *testing.T, topo *Topology) *Result {
	t.Helper()
	var res *Result
	synctest.Test(t, func(t *testing.T) {
		var err error
		if res, err = Run(topo, t.TempDir()); err != nil {
			t.Fatal(err)
		}
	})
	return res
}

// runCluster runs topo on a cluster it starts (call inside a synctest
// bubble) and leaves the cluster up for inspection until the test ends.
func runCluster(t *testing.T, topo *Topology) (*Cluster, *Result) {
	t.Helper()
	c, err := Start(topo, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	res, err := c.Run()
	if err != nil {
		t.Fatal(err)
	}
	return c, res
}

// paperVM is a guest of mib MiB (SG_VM_MIB sets another size for every
// experiment, to see how the per-eviction fixed costs shrink with it): 30%
// zero pages, 10% repeated.
func paperVM(name string, seed uint64, mib int64) VMSpec {
	if v, err := strconv.ParseInt(os.Getenv("SG_VM_MIB"), 10, 64); err == nil && v > 0 {
		mib = v
	}
	return VMSpec{Name: name, Spec: workload.Spec{Seed: seed, BaseSeed: 100, MemSize: mib << 20, PageSize: 4096,
		ZeroFrac: 0.3, RepeatFrac: 0.1}}
}

// Experiments 1 and 2 measure ET against a bandwidth model, so their
// guests are large enough that what each eviction costs whatever its size
// (~12 ms: two round trips, QUIC's slow start, the last ack) stays near 1%
// of it, as it does in the paper's 5 GB (docs/results.md gives the 64 MiB
// figures too). The others use 64 MiB guests.
const (
	modelVMMiB = 256
	vmMiB      = 64
)

// simulateAll runs every topology in its own bubble, in parallel (each
// bubble is one goroutine-bound simulation; virtual time is unaffected by
// how many run at once), and returns their results in order.
func simulateAll(t *testing.T, names []string, topos []*Topology) []*Result {
	t.Helper()
	res := make([]*Result, len(topos))
	t.Run("runs", func(t *testing.T) {
		for i, topo := range topos {
			t.Run(names[i], func(t *testing.T) {
				t.Parallel()
				res[i] = simulate(t, topo)
			})
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	return res
}

// slowDestination: a 1 Gbit/s source, one 1 Gbit/s intermediate and a
// destination that takes destMbps; the guest has mib MiB.
func slowDestination(destMbps float64, direct bool, mib int64) *Topology {
	return &Topology{
		Nodes: []NodeSpec{
			{Name: "src", Role: Source, UpMbps: srcMbps, DownMbps: srcMbps},
			{Name: "dst", Role: Destination, UpMbps: srcMbps, DownMbps: destMbps},
			{Name: "mid", Role: Intermediate, UpMbps: srcMbps, DownMbps: srcMbps},
		},
		Latency: LatencySpec{Default: Duration(time.Millisecond)},
		VMs:     []VMSpec{paperVM("vm", 1, mib)},
		Evict:   EvictSpec{Direct: direct},
		Seed:    1,
	}
}

// ideal is the time to move n bytes at mbps.
func ideal(n int64, mbps float64) time.Duration {
	return time.Duration(float64(n) * 8 / (mbps * 1e6) * float64(time.Second))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", d.Seconds()*1000) }

// Experiment 1. Paper: ET flat (~49 s for 5 GB) while direct grows to
// ~310 s at the slowest destination (6x).
func TestPaper1SlowDestination(t *testing.T) {
	t.Parallel()
	speeds := []float64{130, 300, 600, 900}
	if testing.Short() {
		speeds = []float64{130}
	}
	var rows []plotRow
	t.Logf("%-10s %10s %10s %10s %10s %8s %8s %10s %9s %9s", "dest", "ET sg", "ET direct", "TMT sg", "TMT dir", "ratio", "bw ratio", "ET/ideal", "wire sg", "wire dir")
	var names []string
	var topos []*Topology
	for _, mbps := range speeds {
		names = append(names, fmt.Sprintf("%.0f/sg", mbps), fmt.Sprintf("%.0f/direct", mbps))
		topos = append(topos, slowDestination(mbps, false, modelVMMiB), slowDestination(mbps, true, modelVMMiB))
	}
	results := simulateAll(t, names, topos)
	for i, mbps := range speeds {
		sg, direct := results[2*i], results[2*i+1]
		model := ideal(sg.UniqueBytes, srcMbps)
		ratio := direct.ET.Seconds() / sg.ET.Seconds()
		bw := math.Min(srcMbps, mbps+srcMbps) / mbps
		// wire: what the source sent, QUIC and all, over the unique bytes.
		wire := func(r *Result) float64 { return float64(r.Sent("src")) / float64(r.UniqueBytes) }
		t.Logf("%-10s %10s %10s %10s %10s %8.2f %8.2f %10.3f %9.3f %9.3f", fmt.Sprintf("%.0f Mb/s", mbps), ms(sg.ET), ms(direct.ET),
			ms(sg.TMT), ms(direct.TMT), ratio, bw, sg.ET.Seconds()/model.Seconds(), wire(sg), wire(direct))
		rows = append(rows, plotRow{mbps, sg.ET, direct.ET, sg.TMT, direct.TMT})
		// The goals: ET ≤ 1.05x the source-link model (measured
		// 1.034-1.037x: 2.5% is bytes, mostly QUIC framing; the rest ~12
		// ms of round trips and slow start), a ratio ≥ 0.95x the bandwidth
		// ratio (0.99-1.00x) and TMT ≤ 1.05x direct (≤ 1.020x).
		if sg.ET > time.Duration(1.05*float64(model)) {
			t.Errorf("%.0f Mb/s: ET %v is more than 1.05x the source-link model %v", mbps, sg.ET, model)
		}
		if ratio < 0.95*bw {
			t.Errorf("%.0f Mb/s: direct/scatter ET ratio %.2f below 0.95x the bandwidth ratio %.2f", mbps, ratio, bw)
		}
		if sg.TMT > time.Duration(1.05*float64(direct.TMT)) {
			t.Errorf("%.0f Mb/s: TMT %v more than 1.05x direct's %v", mbps, sg.TMT, direct.TMT)
		}
	}
	if path := os.Getenv("SG_PLOT"); path != "" {
		if err := plotSlowDestination(path, topos[0].VMs[0].Spec.MemSize>>20, rows); err != nil {
			t.Fatal(err)
		}
		t.Logf("plot written to %s", path)
	}
}

// Experiment 2. Paper: ~315/125/78/53/50 s with 0-4 intermediates.
func TestPaper2IntermediateScaling(t *testing.T) {
	t.Parallel()
	const destMbps, relayMbps = 200, 200
	const relays = 4
	var names []string
	var topos []*Topology
	for k := 0; k <= relays; k++ {
		topo := &Topology{
			Nodes: []NodeSpec{
				{Name: "src", Role: Source, UpMbps: srcMbps, DownMbps: srcMbps},
				{Name: "dst", Role: Destination, UpMbps: srcMbps, DownMbps: destMbps},
			},
			Latency: LatencySpec{Default: Duration(time.Millisecond)},
			VMs:     []VMSpec{paperVM("vm", 2, modelVMMiB)},
			Seed:    2,
		}
		for i := range k {
			topo.Nodes = append(topo.Nodes, NodeSpec{Name: fmt.Sprintf("mid%d", i), Role: Intermediate, UpMbps: srcMbps, DownMbps: relayMbps})
		}
		names, topos = append(names, fmt.Sprintf("%d-relays", k)), append(topos, topo)
	}
	results := simulateAll(t, names, topos)
	base := results[0].ET
	t.Logf("%-6s %10s %12s %10s", "relays", "ET", "model ET", "off")
	for k, res := range results {
		// The bandwidth model: ET ∝ 1 / min(source, destination + relays),
		// scaled from the run without relays (same bytes, same overheads).
		model := time.Duration(float64(base) * destMbps / math.Min(srcMbps, destMbps+float64(k)*relayMbps))
		off := res.ET.Seconds()/model.Seconds() - 1
		t.Logf("%-6d %10s %12s %+9.1f%%", k, ms(res.ET), ms(model), off*100)
		// The goal: within 5% of the model (measured +0.7..+2.1%).
		if off > 0.05 {
			t.Errorf("%d relays: ET %v is %.1f%% above the bandwidth model %v", k, res.ET, off*100, model)
		}
	}
}

// Experiment 3. Paper (gang migration): ~52 → ~34.5 GB with dedup.
func TestPaper3SharedBaseImage(t *testing.T) {
	t.Parallel()
	topo := &Topology{
		Nodes: []NodeSpec{
			{Name: "src", Role: Source, UpMbps: srcMbps, DownMbps: srcMbps},
			{Name: "dst", Role: Destination, UpMbps: srcMbps, DownMbps: 300},
			{Name: "mid", Role: Intermediate, UpMbps: srcMbps, DownMbps: srcMbps},
		},
		Latency: LatencySpec{Default: Duration(time.Millisecond)},
		Seed:    3,
	}
	for i := range 5 {
		topo.VMs = append(topo.VMs, VMSpec{Name: fmt.Sprintf("vm%d", i), Spec: workload.Spec{Seed: uint64(10 + i), BaseSeed: 7,
			MemSize: 32 << 20, PageSize: 4096, ZeroFrac: 0.2, SharedFrac: 0.5, RepeatFrac: 0.05}})
	}
	res := simulate(t, topo)
	var chunkBytes int64
	for _, n := range res.Evict.SentBytes {
		chunkBytes += n
	}
	chunkBytes -= res.Evict.ManifestPushed
	wire := res.Sent("src")
	t.Logf("VM bytes %d MiB, non-zero %d MiB, unique %d MiB", res.VMBytes>>20, res.NonZeroBytes>>20, res.UniqueBytes>>20)
	t.Logf("chunk bytes pushed by the source %d MiB (%.4fx unique), on the source's wire %d MiB (%.3fx unique, with QUIC, have queries, placements, manifest)",
		chunkBytes>>20, float64(chunkBytes)/float64(res.UniqueBytes), wire>>20, float64(wire)/float64(res.UniqueBytes))
	t.Logf("traffic saved against sending every non-zero page: %.1f%%; ET %s", 100*(1-float64(wire)/float64(res.NonZeroBytes)), ms(res.ET))
	// Each distinct chunk crosses once, but for the endgame's spare copies
	// (the last batches of a slow target, sent again to an idle one).
	// (Some spares are abandoned unanswered when the eviction ends, so
	// the acknowledged bytes lie between the unique bytes and that plus
	// the spares handed out.)
	t.Logf("endgame spare copies handed out: %d KiB", res.Evict.EndgameBytes>>10)
	if chunkBytes < res.UniqueBytes || chunkBytes > res.UniqueBytes+res.Evict.EndgameBytes {
		t.Errorf("chunk bytes acknowledged %d; want between the unique %d and that plus the endgame's %d", chunkBytes, res.UniqueBytes, res.Evict.EndgameBytes)
	}
	// Chunk bytes meet the goal (±2%); the wire adds per-position
	// metadata (placements, have queries, manifest) and QUIC framing.
	if wire > res.UniqueBytes*110/100 {
		t.Errorf("source sent %d bytes on the wire, more than 1.10x the %d unique bytes", wire, res.UniqueBytes)
	}
}

// Experiment 4. A cap on the destination's intake (protecting its
// foreground traffic) does not slow the eviction: relays take the rest.
func TestPaper4CappedDestinationIntake(t *testing.T) {
	t.Parallel()
	mk := func(capMBps float64) *Topology {
		topo := slowDestination(400, false, vmMiB)
		topo.Nodes[1].IngestMBps = capMBps
		topo.Seed = 4
		return topo
	}
	free, capped := simulate(t, mk(0)), simulate(t, mk(5))
	t.Logf("ET with the destination taking all it can: %s; capped at 5 MB/s (40 Mbit/s): %s (%.3fx)",
		ms(free.ET), ms(capped.ET), capped.ET.Seconds()/free.ET.Seconds())
	// The goal: "unaffected", ≤ 1.05x (measured 1.030-1.037x).
	if capped.ET > time.Duration(1.05*float64(free.ET)) {
		t.Errorf("capped ET %v is more than 1.05x the uncapped %v", capped.ET, free.ET)
	}
}

// Experiment 5. Paper (post-copy with pre-paging): bubbling avoids ~80% of
// network faults. The guest replays the same trace with and without
// prefetching.
func TestPaper5PrefetchAvoidsFaults(t *testing.T) {
	t.Parallel()
	mk := func(noPrefetch bool) *Topology {
		topo := slowDestination(300, false, vmMiB)
		topo.Gather = GatherSpec{NoPrefetch: noPrefetch, Trace: TraceSpec{Reads: 3000, Burst: 64, Spread: 24,
			Think: Duration(200 * time.Microsecond), Seed: 5}}
		topo.Seed = 5
		return topo
	}
	with, without := simulate(t, mk(false)), simulate(t, mk(true))
	r1, f1 := with.DemandReads()
	r0, f0 := without.DemandReads()
	avoided := 1 - float64(f1)/float64(f0)
	t.Logf("network faults: %d of %d reads with prefetch, %d of %d without: %.1f%% avoided; guest waited %s vs %s",
		f1, r1, f0, r0, avoided*100, ms(with.Trace.Wait), ms(without.Trace.Wait))
	if avoided < 0.85 {
		t.Errorf("prefetch avoided %.1f%% of network faults, want at least 85%%", avoided*100)
	}
}

// Experiment 6. Demand reads go to the nearest holder, and move when it
// slows down.
func TestPaper6NearestHolder(t *testing.T) {
	t.Parallel()
	topo := &Topology{
		Nodes: []NodeSpec{
			{Name: "src", Role: Source, UpMbps: srcMbps, DownMbps: srcMbps},
			{Name: "near", Role: Destination, UpMbps: srcMbps, DownMbps: srcMbps},
			{Name: "far", Role: Intermediate, UpMbps: srcMbps, DownMbps: srcMbps},
			{Name: "host", Role: Bystander, UpMbps: srcMbps, DownMbps: srcMbps},
		},
		Latency: LatencySpec{Default: Duration(5 * time.Millisecond), Pairs: []PairLatency{
			{A: "host", B: "near", OneWay: Duration(500 * time.Microsecond)},
			{A: "host", B: "far", OneWay: Duration(10 * time.Millisecond)},
		}},
		VMs:   []VMSpec{{Name: "vm", Spec: workload.Spec{Seed: 6, BaseSeed: 6, MemSize: 16 << 20, PageSize: 4096}}},
		Evict: EvictSpec{Replicas: 2},
		// The destination keeps the relay's copies: both stay holders.
		Gather: GatherSpec{KeepHolders: true},
		Seed:   6,
	}
	synctest.Test(t, func(t *testing.T) {
		c, res := runCluster(t, topo)
		ctx := context.Background()
		// The host reads on demand only, so every read picks a holder.
		g, err := c.GatherManifest(ctx, "host", res.Evict.VMs[0].Root, false, "near", "far")
		if err != nil {
			t.Fatal(err)
		}
		phase := func(seed uint64) (near, far int64, wait time.Duration) {
			before := g.Report().FetchedBytes
			tr := ReplayTrace(ctx, g, TraceSpec{Reads: 400, Burst: 1, Seed: seed, Think: Duration(time.Millisecond)}, 4096)
			if tr.Err != nil {
				t.Fatal(tr.Err)
			}
			for p, n := range g.Report().FetchedBytes {
				switch c.PeerName(p) {
				case "near":
					near += n - before[p]
				case "far":
					far += n - before[p]
				}
			}
			return near, far, tr.Wait / time.Duration(tr.Reads)
		}
		n1, f1, w1 := phase(61)
		t.Logf("near holder at 1 ms RTT, far at 20 ms: %d KiB from near, %d KiB from far, mean read wait %v", n1>>10, f1>>10, w1)
		c.SetLatencyByName("host", "near", Duration(40*time.Millisecond))
		n2, f2, w2 := phase(62)
		t.Logf("near slowed to 80 ms RTT: %d KiB from near, %d KiB from far, mean read wait %v", n2>>10, f2>>10, w2)
		if n1 < 9*f1 {
			t.Errorf("before: %d bytes from the near holder, %d from the far one; want ≥ 90%% near", n1, f1)
		}
		if w1 > 4*time.Millisecond {
			t.Errorf("before: mean demand wait %v does not track the near holder (1 ms RTT)", w1)
		}
		if f2 < 4*n2 {
			t.Errorf("after the near holder slowed: %d bytes from it, %d from the far one; want ≥ 80%% far", n2, f2)
		}
		if w2 > 3*20*time.Millisecond {
			t.Errorf("after the near holder slowed: mean demand wait %v does not track the far holder (20 ms RTT)", w2)
		}
	})
}

// Experiment 7. An intermediate killed during the gather, with two
// replicas: the VM still arrives whole.
func TestPaper7IntermediateKilledDuringGather(t *testing.T) {
	t.Parallel()
	topo := &Topology{
		Nodes: []NodeSpec{
			{Name: "src", Role: Source, UpMbps: srcMbps, DownMbps: srcMbps},
			{Name: "dst", Role: Destination, UpMbps: srcMbps, DownMbps: 150},
			{Name: "mid1", Role: Intermediate, UpMbps: srcMbps, DownMbps: srcMbps},
			{Name: "mid2", Role: Intermediate, UpMbps: srcMbps, DownMbps: srcMbps},
		},
		Latency: LatencySpec{Default: Duration(time.Millisecond)},
		VMs:     []VMSpec{paperVM("vm", 7, vmMiB)},
		Evict:   EvictSpec{Replicas: 2},
		Gather:  GatherSpec{Verify: true},
		// The eviction ends well before the 150 Mbit/s destination has
		// everything: kill a relay in between.
		Faults: []Fault{{At: Duration(1500 * time.Millisecond), Kill: "mid1"}},
		Seed:   7,
	}
	res := simulate(t, topo)
	t.Logf("ET %s, mid1 killed at 1500 ms, TMT %s, holders %v, verified %v", ms(res.ET), ms(res.TMT), res.HolderBytes, res.Verified)
	if res.ET > 1500*time.Millisecond {
		t.Errorf("ET %v: the kill was meant to fall during the gather", res.ET)
	}
	if res.TMT < 1500*time.Millisecond {
		t.Errorf("TMT %v: the gather ended before the kill", res.TMT)
	}
	if !res.Verified {
		t.Error("the gathered VM was not verified")
	}
}
