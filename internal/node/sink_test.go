package node

import (
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/wire"
)

// testRoles stands in for what internal/cluster installs on a node, as
// much as the node's own rules need: migrations are accepted and
// remembered (so that the quota exempts them), and releases end the
// holds (the node decides whose release counts). Nothing is gathered.
type testRoles struct {
	n    *Node
	mu   sync.Mutex
	open map[exemptKey]wire.Open
}

// serveRoles installs testRoles on n.
func serveRoles(t *testing.T, n testNode) {
	t.Helper()
	r := &testRoles{n: n.Node, open: map[exemptKey]wire.Open{}}
	n.SetMigrationSink(r)
	n.SetReleaseHandler(r)
}

func (r *testRoles) OpenMigration(from peer.ID, o wire.Open) error {
	r.mu.Lock()
	r.open[exemptKey{from, o.ID}] = o
	r.mu.Unlock()
	return nil
}

func (r *testRoles) Expecting(from peer.ID, id wire.MigrationID) (bytes, positions int64, ok bool) {
	r.mu.Lock()
	o, ok := r.open[exemptKey{from, id}]
	r.mu.Unlock()
	for _, rg := range o.Regions {
		bytes += int64(rg.Size)
		positions += int64((rg.Size + uint64(rg.ChunkSize) - 1) / uint64(rg.ChunkSize))
	}
	return bytes, positions, ok
}

func (r *testRoles) AddHolders(peer.ID, wire.MigrationID, []wire.Holder) error       { return nil }
func (r *testRoles) AddPlacements(peer.ID, wire.MigrationID, []wire.Placement) error { return nil }
func (r *testRoles) FinishMigration(peer.ID, wire.MigrationID, chunk.ID, bool) error { return nil }

func (r *testRoles) AbandonMigration(from peer.ID, id wire.MigrationID, _ error) {
	r.mu.Lock()
	delete(r.open, exemptKey{from, id})
	r.mu.Unlock()
}

func (r *testRoles) Release(from peer.ID, rel wire.Release) (int, error) {
	return r.n.ReleaseHeld(from, rel.ID, true)
}
