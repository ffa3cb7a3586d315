package node

import (
	"context"
	"errors"
	"math/bits"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/wire"
)

// resolveParallel bounds a migration's push placements being resolved at
// once; past it the control stream waits, and so does the source.
const resolveParallel = 16

// resolveTimeout bounds one question to a holder. It is answered from
// memory in a round trip; one that does not answer in this long (crashed,
// cut off) is asked nothing more for this migration, so that its pushes
// wait for the manifest rather than stall the control stream.
const resolveTimeout = time.Second

// pushResolver turns one migration's push placements into placements: it
// asks a holder of each push for the push's IDs (checked against its
// digest; this node's own pushes are looked up here) and places them. A
// push no holder remembers is left unplaced: the manifest built at Done
// then misses it, and the source sends the manifest instead.
type pushResolver struct {
	n    *Node
	from peer.ID
	id   wire.MigrationID
	sink MigrationSink
	sem  chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	holders map[uint8]peer.ID
	failed  map[peer.ID]bool // did not answer: not asked again
}

func newPushResolver(n *Node, from peer.ID, id wire.MigrationID, sink MigrationSink) *pushResolver {
	return &pushResolver{n: n, from: from, id: id, sink: sink, sem: make(chan struct{}, resolveParallel),
		holders: map[uint8]peer.ID{}, failed: map[peer.ID]bool{}}
}

// setHolders learns the migration's holders by index (a Holders frame).
func (r *pushResolver) setHolders(hs []wire.Holder) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, h := range hs {
		if p, err := peer.Decode(h.Peer); err == nil {
			r.holders[h.Index] = p
		}
	}
}

// add starts resolving pps, waiting for room when resolveParallel are
// under way.
func (r *pushResolver) add(pps []wire.PushPlacement) {
	for _, pp := range pps {
		r.sem <- struct{}{}
		r.wg.Go(func() {
			defer func() { <-r.sem }()
			r.resolve(pp)
		})
	}
}

// wait returns once every push placement added so far is resolved or
// given up.
func (r *pushResolver) wait() { r.wg.Wait() }

func (r *pushResolver) resolve(pp wire.PushPlacement) {
	for mask := pp.Holders; mask != 0; mask &= mask - 1 {
		idx := uint8(bits.TrailingZeros32(mask))
		r.mu.Lock()
		p, ok := r.holders[idx]
		ok = ok && !r.failed[p]
		r.mu.Unlock()
		if !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(r.n.life, resolveTimeout)
		ids, err := r.n.PushIDs(ctx, p, pp.Digest)
		cancel()
		if err != nil {
			r.n.log.Debug("push placement: holder cannot say the push's IDs", "migration", r.id, "push", pp.Digest.Short(), "holder", p, "err", err)
			if !errors.Is(err, errPushUnknown) {
				r.mu.Lock()
				r.failed[p] = true
				r.mu.Unlock()
			}
			continue
		}
		ps, err := pp.Placements(ids, nil)
		if err == nil {
			err = r.sink.AddPlacements(r.from, r.id, ps)
		}
		if err != nil {
			r.n.log.Warn("push placement refused", "migration", r.id, "push", pp.Digest.Short(), "err", err)
		}
		return
	}
	r.n.log.Warn("no holder remembers a placed push; its chunks wait for the manifest", "migration", r.id, "push", pp.Digest.Short())
}
