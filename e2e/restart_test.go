package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/lab"
)

// TestDestinationKilledMidGatherResumes kills the destination's sgnode
// with SIGKILL a quarter of the way through its gather (--replicas 2, so
// what it held only in memory has a second holder) and starts it again:
// the gather resumes from its files, fetches nothing they already hold,
// and ends byte-identical to the source.
func TestDestinationKilledMidGatherResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	c := startClusterWith(t, map[string][]string{"dst": {"--ingest-rate", "200Mbit"}}, // a gather of several seconds
		"src", "dst", "r1", "r2")
	src, dst := c.Nodes[0], c.Nodes[1]
	images := addVM(t, ctx, src, "web1", vmSpec(7))
	var res api.EvictResult
	if err := src.SgctlJSON(ctx, &res, "evict", "vm", "web1", "--to", dst.PeerID, "--replicas", "2"); err != nil {
		t.Fatal(err)
	}
	nonZero := res.Chunks - res.ZeroChunks

	// Kill once the manifest is resolved (zero positions are present) and
	// a quarter of the rest is in the files.
	before := waitPresent(t, ctx, dst, res, 0.25)
	if err := dst.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := dst.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	m := waitGathered(t, ctx, dst, "web1")
	g := m.Gather
	fetched := g.PrefetchChunks + g.DemandChunks + g.SourceChunks
	t.Logf("killed with %d of %d positions present (%d zero); after the restart: %d kept from the files, %d fetched, %d copied locally, TMT %v",
		before.Gather.ChunksPresent, res.Chunks, res.ZeroChunks, g.KeptChunks, fetched, g.LocalChunks, g.TMT)
	if held := before.Gather.ChunksPresent - res.ZeroChunks; g.KeptChunks < held {
		t.Errorf("kept %d chunks from the files, but %d non-zero positions were written before the kill", g.KeptChunks, held)
	}
	if fetched+g.KeptChunks > nonZero {
		t.Errorf("%d fetched + %d kept > %d non-zero positions: something already held was fetched again", fetched, g.KeptChunks, nonZero)
	}
	sameFiles(t, g.Files[:len(images)], images)
}

// waitPresent waits until dst's gather has the manifest resolved (zero
// positions present) and frac of the other positions in its files.
func waitPresent(t *testing.T, ctx context.Context, dst *lab.Node, res api.EvictResult, frac float64) api.Migration {
	t.Helper()
	nonZero := res.Chunks - res.ZeroChunks
	var m api.Migration
	for {
		var ms []api.Migration
		if err := dst.SgctlJSON(ctx, &ms, "migrations"); err != nil {
			t.Fatal(err)
		}
		for _, x := range ms {
			if x.Role == "destination" && x.Gather != nil {
				m = x
			}
		}
		if g := m.Gather; g != nil {
			if g.Complete {
				t.Fatal("the gather completed too soon; slow the destination further")
			}
			if g.ChunksPresent >= res.ZeroChunks+int64(frac*float64(nonZero)) {
				return m
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("gather never reached %.0f%%: %+v", 100*frac, m.Gather)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestSourceAndRelayKilledDuringGather kills the source with SIGKILL at the
// eviction time and an intermediate a third of the way through the gather
// (--replicas 2): the destination still ends with a byte-identical VM.
func TestSourceAndRelayKilledDuringGather(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	c := startClusterWith(t, map[string][]string{"dst": {"--ingest-rate", "200Mbit"}}, "src", "dst", "r1", "r2", "r3")
	src, dst, r1 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	images := addVM(t, ctx, src, "web1", vmSpec(8))
	var res api.EvictResult
	if err := src.SgctlJSON(ctx, &res, "evict", "vm", "web1", "--to", dst.PeerID, "--replicas", "2"); err != nil {
		t.Fatal(err)
	}
	if err := src.Kill(); err != nil {
		t.Fatal(err)
	}
	waitPresent(t, ctx, dst, res, 0.33)
	if err := r1.Kill(); err != nil {
		t.Fatal(err)
	}
	m := waitGathered(t, ctx, dst, "web1")
	t.Logf("source killed at ET (%v), r1 (%d MiB pushed to it) a third into the gather: TMT %v, fetched %v",
		res.ET, res.SentBytes[r1.PeerID]>>20, m.Gather.TMT, m.Gather.FetchedBytes)
	sameFiles(t, m.Gather.Files, images)
}
