package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/eviction"
	"github.com/sgrelay/sg/internal/wire"
)

// A destination that cannot build the manifest from the placements says
// so through the node's protocol; the source's eviction sees its own
// sentinel, and the session goes on (the source sends the manifest).
func TestNetDoneAsksForTheManifest(t *testing.T) {
	nodes := newTestNodes(t, 2, nil)
	src, dst := nodes[0], nodes[1]
	connect(t, src, dst)
	roles := Serve(t.Context(), dst.Node, dst.store, Config{Dir: t.TempDir()})
	t.Cleanup(roles.Wait)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	o := wire.Open{ID: randomMigrationID(), VM: "web1", Regions: []wire.RegionInfo{{Name: "mem", Size: 2 * 4096, ChunkSize: 4096}}}
	s, err := NewNet(src.Node).OpenMigration(ctx, dst.ID().String(), o)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing placed: the zero VM's manifest is not what this root names.
	err = s.Done(ctx, chunk.Sum([]byte("another manifest")), true)
	if !errors.Is(err, eviction.ErrManifestNeeded) {
		t.Fatalf("Done with build: %v, want eviction.ErrManifestNeeded", err)
	}
	if err := s.Holders(ctx, []wire.Holder{{Index: 0, Peer: src.ID().String()}}); err != nil {
		t.Fatalf("the session after the request for the manifest: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("closing the session after the request for the manifest: %v", err)
	}
	if roles.Gatherer(o.ID) == nil {
		t.Fatal("no gather for the open migration")
	}
}
