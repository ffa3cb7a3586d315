package node

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/chunk"
)

// pushQuota caps the bytes one peer's pushes may occupy in this node's
// store, so that one admitted peer (buggy, compromised, or just evicting
// a huge VM) cannot fill a relay that others rely on. A chunk is charged
// to the peer that first stored it and uncharged when it is deleted.
type pushQuota struct {
	limit int64 // bytes per peer; 0: no quota

	mu    sync.Mutex
	used  map[peer.ID]int64
	owner map[chunk.ID]charged
}

type charged struct {
	peer peer.ID
	size int64
}

// DefaultPushQuotaShare is the share of its store's budgets a node lets
// any one peer's pushes occupy unless configured otherwise: enough for a
// large eviction, and leaves room for the other peers.
const DefaultPushQuotaShare = 0.5

// pushQuotaFor is the per-peer quota cfg asks for on a store with these
// budgets: 0 (no cap) only when asked with a negative setting.
func pushQuotaFor(cfg int64, budgets int64) int64 {
	switch {
	case cfg > 0:
		return cfg
	case cfg < 0:
		return 0
	}
	return max(int64(DefaultPushQuotaShare*float64(budgets)), 1)
}

func newPushQuota(limit int64) *pushQuota {
	return &pushQuota{limit: limit, used: map[peer.ID]int64{}, owner: map[chunk.ID]charged{}}
}

// admit reports whether from may store n more bytes.
func (q *pushQuota) admit(from peer.ID, n int) bool {
	if q.limit <= 0 {
		return true
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.used[from]+int64(n) <= q.limit
}

// charge records that from stored id (n bytes).
func (q *pushQuota) charge(from peer.ID, id chunk.ID, n int) {
	if q.limit <= 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.owner[id]; ok {
		return
	}
	q.owner[id] = charged{from, int64(n)}
	q.used[from] += int64(n)
}

// forget uncharges a deleted chunk.
func (q *pushQuota) forget(id chunk.ID) {
	if q.limit <= 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if c, ok := q.owner[id]; ok {
		delete(q.owner, id)
		if q.used[c.peer] -= c.size; q.used[c.peer] <= 0 {
			delete(q.used, c.peer)
		}
	}
}
