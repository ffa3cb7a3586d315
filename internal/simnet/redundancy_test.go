package simnet

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// redundancyTopology: a 1 Gbit/s source, a 150 Mbit/s destination and
// four 1 Gbit/s relays; a relay is killed 100 ms after the eviction
// time, while the destination still gathers (it has fetched little from
// the relays yet: its bulk prefetch waits for the scatter's end).
func redundancyTopology(evict EvictSpec) *Topology {
	return &Topology{
		Nodes: []NodeSpec{
			{Name: "src", Role: Source, UpMbps: srcMbps, DownMbps: srcMbps},
			{Name: "dst", Role: Destination, UpMbps: srcMbps, DownMbps: 150},
			{Name: "mid1", Role: Intermediate, UpMbps: srcMbps, DownMbps: srcMbps},
			{Name: "mid2", Role: Intermediate, UpMbps: srcMbps, DownMbps: srcMbps},
			{Name: "mid3", Role: Intermediate, UpMbps: srcMbps, DownMbps: srcMbps},
			{Name: "mid4", Role: Intermediate, UpMbps: srcMbps, DownMbps: srcMbps},
		},
		Latency: LatencySpec{Default: Duration(time.Millisecond)},
		VMs:     []VMSpec{vmSpec("vm", 8, 32)},
		Evict:   evict,
		Gather:  GatherSpec{Verify: true},
		Faults:  []Fault{{At: Duration(100 * time.Millisecond), AfterET: true, Kill: "mid2"}},
		Seed:    8,
	}
}

// Erasure coding against replicas, same VM, same links, same fault: a
// relay killed during the gather. Both end with the VM byte for byte;
// 4+1 stripes cost the source about 1.25x the unique bytes where two
// replicas cost 2x, and so free it sooner.
func TestRedundancyAgainstReplicas(t *testing.T) {
	t.Parallel()
	ec := simulate(t, redundancyTopology(EvictSpec{Redundancy: "4+1"}))
	rep := simulate(t, redundancyTopology(EvictSpec{Replicas: 2}))
	for _, r := range []struct {
		name string
		res  *Result
	}{{"4+1", ec}, {"replicas 2", rep}} {
		var rebuilt int64
		for _, g := range r.res.Gather {
			rebuilt += g.RebuiltChunks
		}
		t.Logf("%-10s ET %s TMT %s; source sent %.2fx the unique bytes; %d chunks decoded from stripes; verified %v",
			r.name, ms(r.res.ET), ms(r.res.TMT), float64(r.res.Sent("src"))/float64(r.res.UniqueBytes), rebuilt, r.res.Verified)
		if !r.res.Verified {
			t.Fatalf("%s: the gathered VM was not verified", r.name)
		}
		if r.res.TMT < r.res.ET+100*time.Millisecond {
			t.Fatalf("%s: ET %v, TMT %v: the kill 100 ms after ET was meant to fall during the gather", r.name, r.res.ET, r.res.TMT)
		}
	}
	ecBytes, repBytes := float64(ec.Sent("src")), float64(rep.Sent("src"))
	if ecBytes > 1.40*float64(ec.UniqueBytes) || ecBytes > 0.75*repBytes {
		t.Errorf("4+1 sent %.0f bytes, replicas 2 %.0f, unique %d: want at most 1.4x unique and 0.75x replicas", ecBytes, repBytes, ec.UniqueBytes)
	}
	var rebuilt int64
	for _, g := range ec.Gather {
		rebuilt += g.RebuiltChunks
	}
	if rebuilt == 0 {
		t.Error("4+1: no chunk was decoded from its stripe: the killed relay held nothing the destination still needed")
	}
}

// A relay killed at a random moment (drawn from the seed: the same run
// each time) of the scatter or the gather, and the source at a random
// moment after it is free, with 4+1 stripes over five relays and with two
// replicas: the VM always arrives byte for byte.
func TestRelayKilledAtRandomMoment(t *testing.T) {
	t.Parallel()
	for seed := uint64(1); seed <= 4; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))
		evict, mode := EvictSpec{Redundancy: "4+1"}, "4+1"
		if seed%2 == 0 {
			evict, mode = EvictSpec{Replicas: 2}, "replicas 2"
		}
		topo := redundancyTopology(evict)
		topo.Nodes = append(topo.Nodes, NodeSpec{Name: "mid5", Role: Intermediate, UpMbps: srcMbps, DownMbps: srcMbps})
		victim := fmt.Sprintf("mid%d", 1+rng.IntN(5))
		at := time.Duration(rng.Int64N(int64(1000 * time.Millisecond))) // TMT is 1.15-1.3 s without a kill
		srcAt := time.Duration(rng.Int64N(int64(800 * time.Millisecond)))
		topo.Faults = []Fault{{At: Duration(at), Kill: victim}, {At: Duration(srcAt), AfterET: true, Kill: "src"}}
		topo.Seed = seed
		res := simulate(t, topo)
		var rebuilt int64
		for _, g := range res.Gather {
			rebuilt += g.RebuiltChunks
		}
		t.Logf("seed %d, %s: %s killed at %s, the source %s after ET; ET %s, TMT %s, %d chunks repaired at the source, %d decoded from stripes; verified %v",
			seed, mode, victim, ms(at), ms(srcAt), ms(res.ET), ms(res.TMT), res.Evict.Repaired, rebuilt, res.Verified)
		if !res.Verified {
			t.Fatalf("seed %d: the VM was not verified", seed)
		}
		if res.TMT < at {
			t.Errorf("seed %d: TMT %v before the kill at %v: the kill tested nothing", seed, res.TMT, at)
		}
	}
}
