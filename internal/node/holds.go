package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/wire"
)

// DefaultHoldLease is how long a holder keeps the chunks of a migration
// whose destination neither releases nor renews it.
const DefaultHoldLease = 24 * time.Hour

// maxHoldsPerPeer bounds the holds one pusher may have open here, so the
// records themselves cannot exhaust the node.
const maxHoldsPerPeer = 4096

// maxHoldIDsPerPeer bounds the migration IDs all of one pusher's holds
// name together: each costs a pending entry, so holds × wire.MaxHoldIDs
// would let one peer take tens of MB of records.
const maxHoldIDsPerPeer = 4096

// holdStore is what keeps held chunks: *chunkstore.Store.
type holdStore interface {
	Hold(holder string, ids ...chunk.ID) int
	Free(holder string, del bool) ([]chunk.ID, error)
}

// holds records why this node keeps pushed chunks: each push stream says
// which migrations (and their destination) or which put its chunks are
// for, and a chunk is deleted only when no hold keeps it. Only a
// migration's destination may end its hold (Release) or extend it
// (Renew); only a put's pusher may remove it. A hold nobody ends runs out:
// a migration's after the lease, a put's at its expiry.
type holds struct {
	store holdStore // nil: the store keeps no holds
	quota *pushQuota
	lease time.Duration
	now   func() time.Time
	self  peer.ID // this node: holds naming it are for migrations to here

	mu      sync.Mutex
	recs    map[string]*hold
	perPeer map[peer.ID]int
	idsPeer map[peer.ID]int // migration IDs named by each pusher's holds
	opened  uint64          // records made: each has a store key of its own
}

// hold is one pusher's hold on the chunks it pushed for one purpose.
type hold struct {
	key string
	// storeKey names this record's chunks in the store. A hold opened
	// again under the same key while the ended record's chunks are
	// being freed (outside holds.mu) must not share their set, or that
	// Free would unpin what the new record's stream was told is stored.
	storeKey string
	pusher   peer.ID
	kind     wire.HoldKind
	dest     peer.ID                   // the migrations' destination
	pending  map[wire.MigrationID]bool // migrations not released yet (put: its ID)
	expires  time.Time                 // zero: until removed
	// ids are the hold's migrations as pushed (immutable); forSelf: their
	// destination is this node.
	ids     []wire.MigrationID
	forSelf bool
	// charged is what the pusher's quota was charged for this hold's
	// entries, given back when it ends (under holds.mu).
	charged int64
}

func newHolds(store Store, lease time.Duration, quota *pushQuota) *holds {
	hs, _ := store.(holdStore)
	return &holds{store: hs, quota: quota, lease: lease, now: time.Now, recs: map[string]*hold{}, perPeer: map[peer.ID]int{}, idsPeer: map[peer.ID]int{}}
}

// errTooManyHolds refuses a pusher that opened maxHoldsPerPeer holds, or
// holds naming maxHoldIDsPerPeer migration IDs.
var errTooManyHolds = errors.New("too many open holds for this peer")

// open returns from's hold for h, making it if new. Opening a hold again
// (another stream of the same eviction) does not extend its lease: only
// the destination's renew does.
func (hs *holds) open(from peer.ID, h wire.Hold) (*hold, error) {
	if err := h.Validate(); err != nil {
		return nil, err
	}
	var dest peer.ID
	if h.Kind == wire.HoldMigration {
		var err error
		if dest, err = peer.Decode(h.Dest); err != nil {
			return nil, fmt.Errorf("hold: destination: %w", wire.ErrMalformed)
		}
	}
	key := holdKey(from, h)
	now := hs.now()
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if r := hs.recs[key]; r != nil {
		return r, nil
	}
	if hs.perPeer[from] >= maxHoldsPerPeer || hs.idsPeer[from]+len(h.IDs) > maxHoldIDsPerPeer {
		return nil, errTooManyHolds
	}
	hs.opened++
	r := &hold{key: key, storeKey: fmt.Sprintf("%s/%d", key, hs.opened), pusher: from, kind: h.Kind, dest: dest,
		pending: make(map[wire.MigrationID]bool, len(h.IDs)), ids: h.IDs, forSelf: h.Kind == wire.HoldMigration && dest == hs.self}
	for _, id := range h.IDs {
		r.pending[id] = true
	}
	switch {
	case h.Kind == wire.HoldMigration:
		r.expires = now.Add(hs.lease)
	case h.Expire > 0:
		r.expires = now.Add(h.Expire)
	}
	hs.recs[key] = r
	hs.perPeer[from]++
	hs.idsPeer[from] += len(r.ids)
	return r, nil
}

// holdKey names a hold in the store: per pusher, so no peer can touch
// another's holds by naming the same migrations.
func holdKey(from peer.ID, h wire.Hold) string {
	s := sha256.New()
	s.Write([]byte{byte(h.Kind)})
	s.Write([]byte(h.Dest))
	for _, id := range h.IDs {
		s.Write(id[:])
	}
	return fmt.Sprintf("hold/%s/%s", from, hex.EncodeToString(s.Sum(nil)[:16]))
}

// errHoldEnded refuses a push on a stream whose hold was released or ran
// out: nothing would ever free what it stored.
var errHoldEnded = errors.New("hold ended: open a new push stream")

// keep records that r keeps ids, and returns how many were new to r; each
// new one adds entryCost (already reserved from the pusher's quota) to
// what r gives back when it ends. Call it before storing them. It refuses once r has ended: the check and the
// store's hold are made under hs.mu, so an end that comes later frees
// them, and one that came first leaves nothing pinned.
func (hs *holds) keep(r *hold, entryCost int64, ids ...chunk.ID) (int, error) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.recs[r.key] != r {
		return 0, errHoldEnded
	}
	added := len(ids)
	if hs.store != nil {
		added = hs.store.Hold(r.storeKey, ids...)
	}
	r.charged += int64(added) * entryCost
	return added, nil
}

// release ends, for the destination from, migration id in each hold that
// names it; a hold whose migrations are all released frees its chunks
// (with del false it only stops keeping them). Releases from any other
// peer match nothing. It returns the chunks deleted.
func (hs *holds) release(from peer.ID, id wire.MigrationID, del bool) ([]chunk.ID, error) {
	hs.mu.Lock()
	var ended []*hold
	for _, r := range hs.recs {
		if r.kind != wire.HoldMigration || r.dest != from || !r.pending[id] {
			continue
		}
		if delete(r.pending, id); len(r.pending) == 0 {
			ended = append(ended, r)
			hs.forgetLocked(r)
		}
	}
	hs.mu.Unlock()
	return hs.free(ended, del)
}

// renew extends, for the destination from, the lease of each hold naming
// migration id; it returns how many it extended.
func (hs *holds) renew(from peer.ID, id wire.MigrationID) int {
	until := hs.now().Add(hs.lease)
	hs.mu.Lock()
	defer hs.mu.Unlock()
	n := 0
	for _, r := range hs.recs {
		if r.kind == wire.HoldMigration && r.dest == from && r.pending[id] {
			r.expires = until
			n++
		}
	}
	return n
}

// remove ends from's put id and frees its chunks that nothing else keeps.
func (hs *holds) remove(from peer.ID, id wire.MigrationID) ([]chunk.ID, bool, error) {
	key := holdKey(from, wire.Hold{Kind: wire.HoldPut, IDs: []wire.MigrationID{id}})
	hs.mu.Lock()
	r := hs.recs[key]
	if r != nil {
		hs.forgetLocked(r)
	}
	hs.mu.Unlock()
	if r == nil {
		return nil, false, nil
	}
	freed, err := hs.free([]*hold{r}, true)
	return freed, true, err
}

// expire ends every hold whose time ran out by now and frees its chunks.
func (hs *holds) expire(now time.Time) ([]chunk.ID, error) {
	hs.mu.Lock()
	var ended []*hold
	for _, r := range hs.recs {
		if !r.expires.IsZero() && now.After(r.expires) {
			ended = append(ended, r)
			hs.forgetLocked(r)
		}
	}
	hs.mu.Unlock()
	return hs.free(ended, true)
}

func (hs *holds) forgetLocked(r *hold) {
	delete(hs.recs, r.key)
	if hs.perPeer[r.pusher]--; hs.perPeer[r.pusher] <= 0 {
		delete(hs.perPeer, r.pusher)
	}
	if hs.idsPeer[r.pusher] -= len(r.ids); hs.idsPeer[r.pusher] <= 0 {
		delete(hs.idsPeer, r.pusher)
	}
}

func (hs *holds) free(ended []*hold, del bool) ([]chunk.ID, error) {
	for _, r := range ended { // ended: no keep adds to charged any more
		hs.quota.refund(r.pusher, r.charged)
	}
	if hs.store == nil {
		return nil, nil
	}
	var freed []chunk.ID
	var errs error
	for _, r := range ended {
		ids, err := hs.store.Free(r.storeKey, del)
		freed = append(freed, ids...)
		errs = errors.Join(errs, err)
	}
	return freed, errs
}

// count is how many holds are open.
func (hs *holds) count() int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return len(hs.recs)
}

// expiryEvery is how often holds are checked for expiry: a quarter of the
// lease, within [10 ms, 1 min].
func (hs *holds) expiryEvery() time.Duration {
	return min(max(hs.lease/4, 10*time.Millisecond), time.Minute)
}

// runExpiry frees expired holds until ctx ends.
func (n *Node) runExpiry(ctx context.Context) {
	t := time.NewTicker(n.holds.expiryEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n.pruneExempt()
			freed, err := n.holds.expire(now)
			n.forgetFreed(freed)
			if err != nil {
				n.log.Error("free expired holds", "err", err)
			}
			if len(freed) > 0 {
				n.log.Info("holds expired: chunks freed", "chunks", len(freed))
			}
		}
	}
}

// forgetFreed uncharges deleted chunks from their pushers' quotas.
func (n *Node) forgetFreed(ids []chunk.ID) {
	for _, id := range ids {
		n.quota.forget(id)
	}
	n.m.releasedChunks.Add(float64(len(ids)))
}
