package eviction

import (
	"context"
	"testing"
	"time"

	"github.com/klauspost/reedsolomon"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/manifest"
)

// stripesOf reads an evicted VM's stripes from the cluster.
func stripesOf(t *testing.T, c *fakeCluster, root chunk.ID) []manifest.Stripe {
	t.Helper()
	rootData, err := c.getAnywhere(root)
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Decode(rootData)
	if err != nil {
		t.Fatal(err)
	}
	var out []manifest.Stripe
	for _, id := range m.StripeBlocks {
		data, err := c.getAnywhere(id)
		if err != nil {
			t.Fatal(err)
		}
		if out, err = manifest.DecodeStripeBlock(data, out); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// holdersOf lists the live peers holding id.
func (c *fakeCluster) holdersOf(id chunk.ID) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for p, st := range c.stores {
		if !c.gone[p] && st.Has(id) {
			out = append(out, p)
		}
	}
	return out
}

// checkStripes asserts that every shard of every stripe is on a target of
// its own, and that each shard can be rebuilt from the others.
func checkStripes(t *testing.T, c *fakeCluster, stripes []manifest.Stripe) {
	t.Helper()
	for si, s := range stripes {
		shards := append(append([]chunk.ID{}, s.Data...), s.Parity...)
		seen := map[string]int{}
		data := make([][]byte, len(shards))
		for i, id := range shards {
			hs := c.holdersOf(id)
			if len(hs) == 0 {
				t.Fatalf("stripe %d shard %d held nowhere", si, i)
			}
			for _, p := range hs {
				if j, dup := seen[p]; dup {
					t.Fatalf("stripe %d: shards %d and %d both at %s", si, j, i, p)
				}
				seen[p] = i
			}
			got, _ := c.getAnywhere(id)
			data[i] = append(got, make([]byte, s.Size-len(got))...)
		}
		enc, err := reedsolomon.New(len(s.Data), len(s.Parity))
		if err != nil {
			t.Fatal(err)
		}
		lost := si % len(shards)
		want := data[lost]
		data[lost] = nil
		if err := enc.Reconstruct(data); err != nil {
			t.Fatalf("stripe %d: %v", si, err)
		}
		if string(data[lost]) != string(want) {
			t.Fatalf("stripe %d: shard %d rebuilt wrong", si, lost)
		}
	}
}

// With --redundancy 4+1 over six targets, every distinct chunk is in a
// stripe whose five shards sit on five different targets (or, alone at a
// region's end, on two), the source pushes about 1.25x the unique bytes
// (against 2x for --replicas 2), and any one shard can be rebuilt.
func TestRedundancyStripesOnDistinctTargets(t *testing.T) {
	c := newFakeCluster("dest", "r1", "r2", "r3", "r4", "r5")
	vm, _ := genVM(t, "web1", 5, 8<<20, 4<<20)
	cfg := testConfig("dest", "r1", "r2", "r3", "r4", "r5")
	cfg.Redundancy = Redundancy{4, 1}
	res := evict(t, c, cfg, vm)
	checkComplete(t, c, res, 1, vm)
	stripes := stripesOf(t, c, res.VMs[0].Root)
	checkStripes(t, c, stripes)

	inStripe := map[chunk.ID]bool{}
	for _, s := range stripes {
		for _, id := range append(append([]chunk.ID{}, s.Data...), s.Parity...) {
			inStripe[id] = true
		}
	}
	lone := 0 // chunks alone at a region's end, and manifest nodes: two copies each
	for id := range c.pushedByID {
		if inStripe[id] {
			continue
		}
		if n := len(c.holdersOf(id)); n < 2 {
			t.Fatalf("chunk %s is in no stripe and has %d holder(s)", id.Short(), n)
		}
		lone++
	}
	var pushed int64
	for _, n := range c.pushed {
		pushed += n
	}
	ratio := float64(pushed-2*res.ManifestBytes) / float64(res.UniqueBytes)
	t.Logf("%d stripes, %d parity chunks (%d KiB) for %d KiB unique; %d chunks or manifest nodes with 2 holders; source pushed %.3fx unique",
		len(stripes), res.ParityChunks, res.ParityBytes>>10, res.UniqueBytes>>10, lone, ratio)
	if res.ParityChunks != int64(len(stripes)) || ratio < 1.25 || ratio > 1.30 {
		t.Fatalf("%d parity chunks for %d stripes; pushed %.3fx unique: want 1.25-1.30x", res.ParityChunks, len(stripes), ratio)
	}
}

// A relay killed mid-scatter takes shards of many stripes with it: they
// are read (or coded) again and placed on targets that hold no other
// shard of their stripe.
func TestRedundancyRepairsLostRelay(t *testing.T) {
	c := newFakeCluster("dest", "r1", "r2", "r3", "r4", "r5")
	c.failAfter["r2"] = 6
	vm, _ := genVM(t, "web1", 6, 8<<20, 0)
	cfg := testConfig("dest", "r1", "r2", "r3", "r4", "r5")
	cfg.Redundancy = Redundancy{4, 1}
	res := evict(t, c, cfg, vm)
	if res.Repaired == 0 {
		t.Fatal("nothing repaired: the relay died before it took anything")
	}
	checkComplete(t, c, res, 1, vm)
	checkStripes(t, c, stripesOf(t, c, res.VMs[0].Root))
	t.Logf("%d chunks repaired after r2 died", res.Repaired)
}

// With exactly k+m targets, a lost one leaves a stripe nowhere to go:
// the eviction fails (the VM stays at the source) rather than keep a
// shard on a target that holds another of its stripe.
func TestRedundancyTooFewTargetsLeft(t *testing.T) {
	c := newFakeCluster("dest", "r1", "r2", "r3", "r4")
	c.failAfter["r3"] = 2
	vm, _ := genVM(t, "web1", 7, 4<<20, 0)
	cfg := testConfig("dest", "r1", "r2", "r3", "r4")
	cfg.Redundancy = Redundancy{4, 1}
	e, err := New(c, []VM{vm}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Run(t.Context(), nil); err == nil {
		t.Fatal("an eviction with 4 live targets for 4+1 stripes succeeded")
	} else {
		t.Logf("failed as it should: %v", err)
	}
	if _, err := New(c, []VM{vm}, func() Config { c := cfg; c.Via = c.Via[:3]; return c }()); err == nil {
		t.Fatal("4+1 over 4 targets passed validation")
	}
}

// A relay lost at the final liveness check (after everything was
// acknowledged) leaves its shards to be placed on the one target left
// that holds no other shard of each stripe.
func TestRedundancyRelayLostAtTheEnd(t *testing.T) {
	c := newFakeCluster("dest", "r1", "r2", "r3", "r4", "r5")
	c.dieOnCheck["r3"] = true
	vm, _ := genVM(t, "web1", 8, 4<<20, 0)
	cfg := testConfig("dest", "r1", "r2", "r3", "r4", "r5")
	cfg.Redundancy = Redundancy{4, 1}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	e, err := New(c, []VM{vm}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.Run(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Repaired == 0 {
		t.Fatal("nothing repaired: r3 took nothing")
	}
	checkComplete(t, c, res, 1, vm)
	checkStripes(t, c, stripesOf(t, c, res.VMs[0].Root))
}
