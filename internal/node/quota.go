package node

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/chunk"
)

// chunkOverhead is what the quota charges for each entry a push makes
// beyond its data: a stored chunk's index, pin and owner entries, and a
// hold's entry for each chunk it keeps. Without it a peer could fill the
// node's memory with tiny chunks, or with holds on chunks already here,
// while its quota counted almost nothing.
const chunkOverhead = 256

// pushQuota caps the bytes one peer's pushes may occupy in this node's
// store, so that one admitted peer (buggy, compromised, or just evicting
// a huge VM) cannot fill a relay that others rely on. A stored chunk
// costs its size plus chunkOverhead, charged to the peer that first
// stored it until it is deleted; each chunk a hold keeps costs its pusher
// chunkOverhead more until the hold ends.
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

// reserve charges from n bytes if that keeps it within its quota.
func (q *pushQuota) reserve(from peer.ID, n int64) bool {
	if q.limit <= 0 {
		return true
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.used[from]+n > q.limit {
		return false
	}
	q.used[from] += n
	return true
}

// refund gives back n bytes reserved by from.
func (q *pushQuota) refund(from peer.ID, n int64) {
	if q.limit <= 0 || n == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.used[from] -= n; q.used[from] <= 0 {
		delete(q.used, from)
	}
}

// own records that from's reservation of n bytes is for storing id, given
// back when id is deleted; if id is charged already, n is given back now.
func (q *pushQuota) own(from peer.ID, id chunk.ID, n int64) {
	if q.limit <= 0 {
		return
	}
	q.mu.Lock()
	_, dup := q.owner[id]
	if !dup {
		q.owner[id] = charged{from, n}
	}
	q.mu.Unlock()
	if dup {
		q.refund(from, n)
	}
}

// forget uncharges a deleted chunk.
func (q *pushQuota) forget(id chunk.ID) {
	if q.limit <= 0 {
		return
	}
	q.mu.Lock()
	c, ok := q.owner[id]
	delete(q.owner, id)
	q.mu.Unlock()
	if ok {
		q.refund(c.peer, c.size)
	}
}

// usedBy is what from is charged.
func (q *pushQuota) usedBy(from peer.ID) int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.used[from]
}
