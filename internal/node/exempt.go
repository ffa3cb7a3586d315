package node

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/wire"
)

// exemptBudget bounds what a source may push to its destination beyond its
// push quota: for each migration it has open here, at most that Open's
// region bytes (each chunk costed as the quota costs it). The Open's
// admission bounds those bytes; nothing else does, so a hold naming a
// small migration cannot carry an unbounded stream.
type exemptBudget struct {
	mu   sync.Mutex
	used map[exemptKey]int64
}

type exemptKey struct {
	from peer.ID
	id   wire.MigrationID
}

func newExemptBudget() *exemptBudget { return &exemptBudget{used: map[exemptKey]int64{}} }

// reserve charges n to the first of ids whose budget (budgets[i]) has
// room and returns its index, or -1 if none has.
func (b *exemptBudget) reserve(from peer.ID, ids []wire.MigrationID, budgets []int64, n int64) int {
	if len(budgets) != len(ids) {
		return -1
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, id := range ids {
		k := exemptKey{from, id}
		if b.used[k]+n <= budgets[i] {
			b.used[k] += n
			return i
		}
	}
	return -1
}

// refund gives back n bytes reserved for migration id.
func (b *exemptBudget) refund(from peer.ID, id wire.MigrationID, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := exemptKey{from, id}
	if _, ok := b.used[k]; ok {
		b.used[k] -= n
	}
}

// prune forgets the migrations no longer open, so the ledger holds only
// as many entries as migrations are admitted here.
func (b *exemptBudget) prune(open func(from peer.ID, id wire.MigrationID) bool) {
	b.mu.Lock()
	keys := make([]exemptKey, 0, len(b.used))
	for k := range b.used {
		keys = append(keys, k)
	}
	b.mu.Unlock()
	for _, k := range keys {
		if !open(k.from, k.id) {
			b.mu.Lock()
			delete(b.used, k)
			b.mu.Unlock()
		}
	}
}

// MigrationExpecter is implemented by a MigrationSink that can say
// whether it has a migration open from a peer.
type MigrationExpecter interface {
	// Expecting reports whether from has migration id open here, and
	// its Open's region bytes and chunk positions.
	Expecting(from peer.ID, id wire.MigrationID) (bytes, positions int64, ok bool)
}

// expecter is the migration sink's MigrationExpecter, if it is one.
func (n *Node) expecter() MigrationExpecter {
	n.mig.mu.RLock()
	defer n.mig.mu.RUnlock()
	e, _ := n.mig.sink.(MigrationExpecter)
	return e
}

// exemptBudgets returns, for a push batch under h, the exempt budget of
// each of h's migrations (0 for one not open here from the pusher), or nil
// when h's pushes are held to the quota: h must name this node as
// destination and one of its migrations at least must be open here from
// the pusher (an eviction's other VMs may have ended). Asked again for every batch, so a
// migration that ended exempts nothing more.
func (n *Node) exemptBudgets(from peer.ID, h *hold) []int64 {
	if h == nil || !h.forSelf || n.quota.limit <= 0 {
		return nil
	}
	e := n.expecter()
	if e == nil {
		return nil
	}
	budgets := make([]int64, len(h.ids))
	open := false
	for i, id := range h.ids {
		if b, positions, ok := e.Expecting(from, id); ok { // one that is not open here has no budget
			budgets[i], open = exemptBudgetFor(b, positions), true
		}
	}
	if !open {
		return nil
	}
	return budgets
}

// exemptBudgetFor is what a migration's chunks may cost the store: its
// region bytes, and a store and a hold entry per chunk position. Each
// region is at most 2^50 bytes and there are at most wire.MaxRegions:
// the sum fits; the entries' cost is capped so it does too.
func exemptBudgetFor(bytes, positions int64) int64 {
	return bytes + min(positions, 1<<50)*2*chunkOverhead
}

// pruneExempt drops the exempt ledgers of migrations no longer open.
func (n *Node) pruneExempt() {
	e := n.expecter()
	n.exempt.prune(func(from peer.ID, id wire.MigrationID) bool {
		if e == nil {
			return false
		}
		_, _, ok := e.Expecting(from, id)
		return ok
	})
}
