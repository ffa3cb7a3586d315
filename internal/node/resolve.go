package node

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/wire"
)

// resolveWindow is how many questions one stream to a holder keeps in
// flight: a push's worth of chunks each, so a 100 ms round trip still
// resolves ~2.5 GB/s of 256 KiB pushes. Past it the control stream waits,
// and so does the source.
const resolveWindow = 256

// resolveTimeout bounds the wait for an answer. A holder answers from
// memory in a round trip; one that does not in this long (crashed, cut
// off) is asked nothing more for this migration, so that its pushes wait
// for the manifest rather than stall the control stream.
const resolveTimeout = time.Second

// pushResolver turns one migration's push placements into placements: it
// asks the holder of each push for the push's IDs on one pipelined stream
// per holder (checked against the digest; this node's own pushes are
// looked up here) and places them. A push its holder cannot describe is
// left unplaced: the manifest built at Done then misses it, and the
// source sends the manifest instead.
type pushResolver struct {
	n       *Node
	from    peer.ID
	id      wire.MigrationID
	sink    MigrationSink
	pending sync.WaitGroup // questions not yet answered

	mu      sync.Mutex
	holders map[uint8]peer.ID
	streams map[peer.ID]*reqStream
	failed  map[peer.ID]bool // did not answer: asked nothing more
}

func newPushResolver(n *Node, from peer.ID, id wire.MigrationID, sink MigrationSink) *pushResolver {
	return &pushResolver{n: n, from: from, id: id, sink: sink,
		holders: map[uint8]peer.ID{}, streams: map[peer.ID]*reqStream{}, failed: map[peer.ID]bool{}}
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

// add asks the holders of pps for their IDs, waiting while a holder's
// window is full.
func (r *pushResolver) add(pps []wire.PushPlacement) {
	for _, pp := range pps {
		r.resolve(pp)
	}
}

// wait returns once every question asked so far is answered or given up.
func (r *pushResolver) wait() { r.pending.Wait() }

// close waits for the answers and closes the streams.
func (r *pushResolver) close() {
	r.wait()
	r.mu.Lock()
	streams := r.streams
	r.streams = nil
	r.mu.Unlock()
	for _, rs := range streams {
		_ = rs.close()
	}
}

// resolve asks the push's holder (the lowest-indexed one that has not
// failed) for its IDs.
func (r *pushResolver) resolve(pp wire.PushPlacement) {
	r.mu.Lock()
	var p peer.ID
	for mask := pp.Holders; mask != 0 && p == ""; mask &= mask - 1 {
		if h, ok := r.holders[uint8(bits.TrailingZeros32(mask))]; ok && !r.failed[h] {
			p = h
		}
	}
	r.mu.Unlock()
	switch {
	case p == "":
		r.unresolved(pp, errors.New("no live holder declared"))
	case p == r.n.host.ID():
		ids, err := r.n.ownPushIDs(pp.Digest)
		if err != nil {
			r.unresolved(pp, err)
			return
		}
		r.place(pp, ids)
	default:
		rs, err := r.stream(p)
		if err != nil {
			r.holderFailed(p, err)
			r.unresolved(pp, err)
			return
		}
		r.pending.Add(1)
		ctx, cancel := context.WithTimeout(r.n.life, resolveTimeout)
		defer cancel()
		_ = rs.send(ctx, func(dst []byte) []byte { return wire.AppendPushIDs(dst, pp.Digest) },
			func(t wire.Type, payload []byte, err error) {
				defer r.pending.Done()
				var ids []chunk.ID
				if err == nil {
					ids, err = decodePushIDsAnswer(t, payload, pp.Digest, p)
				}
				if err != nil {
					if !errors.Is(err, errPushUnknown) {
						r.holderFailed(p, err)
					}
					r.unresolved(pp, err)
					return
				}
				r.place(pp, ids)
			})
	}
}

// stream returns the question stream to p, opening it the first time.
func (r *pushResolver) stream(p peer.ID) (*reqStream, error) {
	r.mu.Lock()
	rs, ok := r.streams[p]
	r.mu.Unlock()
	if ok {
		return rs, nil
	}
	ctx, cancel := context.WithTimeout(r.n.life, resolveTimeout)
	defer cancel()
	s, err := r.n.host.NewStream(ctx, p, ProtoPushIDs)
	if err != nil {
		return nil, fmt.Errorf("open push IDs stream to %s: %w", p, err)
	}
	rs = newReqStream(s, resolveWindow, resolveTimeout)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.streams == nil { // closed meanwhile
		rs.abort()
		return nil, ErrStreamClosed
	}
	if old, ok := r.streams[p]; ok {
		rs.abort()
		return old, nil
	}
	r.streams[p] = rs
	return rs, nil
}

func (r *pushResolver) holderFailed(p peer.ID, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.failed[p] {
		r.failed[p] = true
		r.n.log.Warn("holder did not say what its pushes held; their chunks wait for the manifest", "migration", r.id, "holder", p, "err", err)
	}
}

func (r *pushResolver) place(pp wire.PushPlacement, ids []chunk.ID) {
	ps, err := pp.Placements(ids, nil)
	if err == nil {
		err = r.sink.AddPlacements(r.from, r.id, ps)
	}
	if err != nil {
		r.n.log.Warn("push placement refused", "migration", r.id, "push", pp.Digest.Short(), "err", err)
	}
}

func (r *pushResolver) unresolved(pp wire.PushPlacement, err error) {
	r.n.log.Debug("push placement unresolved; its chunks wait for the manifest", "migration", r.id, "push", pp.Digest.Short(), "err", err)
}
