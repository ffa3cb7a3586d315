package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/wire"
)

// handlePush serves a push stream: its first frame is a Hold saying what
// its chunks are for (they are kept until that hold ends), then Push
// batches, each answered by a PushAck.
func (n *Node) handlePush(s network.Stream) {
	var chunks []wire.Chunk
	var st []wire.Status
	var h *hold
	open := &opener{want: wire.TypeHold, open: func(from peer.ID, payload []byte) error {
		w, err := wire.DecodeHold(payload)
		if err == nil {
			h, err = n.holds.open(from, w)
		}
		return err
	}}
	n.openedHandler(ProtoPush, open, wire.TypePush, func(from peer.ID, payload, dst []byte) ([]byte, error) {
		var err error
		chunks, err = wire.DecodePush(payload, chunks)
		if err != nil {
			return dst, err
		}
		if err := n.ingest.Wait(n.life, len(payload)); err != nil {
			return dst, err
		}
		for i := range chunks {
			chunks[i].ID = chunk.Sum(chunks[i].Data)
		}
		if st, err = n.storePushed(from, h, chunks, st[:0]); err != nil {
			return dst, err
		}
		digest := wire.PushDigest(chunks)
		if !slices.ContainsFunc(st, func(s wire.Status) bool { return s != wire.StatusOK }) {
			n.pushes.add(digest, chunks)
		}
		return wire.AppendPushAck(dst, st, digest), nil
	})(s)
}

// storePushed stores one batch, each chunk under the ID computed from its
// bytes, then syncs once (group commit) so every OK it returns is durable.
// It fails, storing nothing more, once h has ended.
func (n *Node) storePushed(from peer.ID, h *hold, chunks []wire.Chunk, st []wire.Status) ([]wire.Status, error) {
	stored := false
	budgets := n.exemptBudgets(from, h) // asked for every batch
	for _, c := range chunks {
		s, put, err := n.storeOne(from, h, budgets, c)
		if err != nil {
			return st, err
		}
		stored = stored || put
		st = append(st, s)
	}
	if stored {
		if err := n.store.Sync(); err != nil {
			n.log.Error("sync chunk store", "err", err)
			for i := range st {
				if st[i] == wire.StatusOK {
					st[i] = wire.StatusFailed
				}
			}
		}
	}
	full := 0
	for i, s := range st {
		n.m.pushChunks.WithLabelValues(s.String()).Inc()
		switch s {
		case wire.StatusOK:
			n.m.pushBytes.Add(float64(len(chunks[i].Data)))
		case wire.StatusFull:
			full++
		}
	}
	if full > 0 {
		n.warnFull(from, full)
	}
	return st, nil
}

// storeOne keeps and stores one pushed chunk, charged (as the quota costs
// it: its hold entry, and its bytes and store entry if it is new here) to
// a migration's exempt budget when one has room, else to from's quota;
// put says the store was written.
func (n *Node) storeOne(from peer.ID, h *hold, budgets []int64, c wire.Chunk) (s wire.Status, put bool, err error) {
	present := n.store.Has(c.ID)
	stored := int64(0) // what storing it costs
	if !present {
		stored = int64(len(c.Data)) + chunkOverhead
	}
	cost := stored + chunkOverhead
	mig := n.exempt.reserve(from, h.ids, budgets, cost)
	refund := n.quota.refund
	entryCost := int64(chunkOverhead) // given back to the quota when the hold ends
	if mig >= 0 {
		refund = func(from peer.ID, b int64) { n.exempt.refund(from, h.ids[mig], b) }
		entryCost = 0 // the migration's budget is spent for good
	} else if !n.quota.reserve(from, cost) {
		// Over this peer's share: it routes the chunk elsewhere.
		n.m.quotaRefused.Inc()
		return wire.StatusFull, false, nil
	}
	added, err := n.holds.keep(h, entryCost, c.ID) // before the store: a concurrent free then keeps it
	if err != nil {
		refund(from, cost)
		return wire.StatusFailed, false, err
	}
	if added == 0 { // this hold kept it already
		refund(from, chunkOverhead)
	}
	if err := n.store.Put(c.ID, c.Data); err != nil {
		refund(from, stored)
		return putStatus(err), false, nil
	}
	if stored > 0 && mig < 0 {
		n.quota.own(from, c.ID, stored)
	}
	return wire.StatusOK, true, nil
}

// fullWarnEvery spaces the "store full" warnings of a relay that keeps
// refusing pushes.
const fullWarnEvery = 10 * time.Second

// warnFull tells the operator that pushes are refused for want of room
// (the pushers place the chunks elsewhere), at most once per fullWarnEvery.
func (n *Node) warnFull(from peer.ID, refused int) {
	now := time.Now().UnixNano()
	last := n.fullSince.Load()
	if now-last < int64(fullWarnEvery) || !n.fullSince.CompareAndSwap(last, now) {
		return
	}
	var free int64
	for _, t := range n.store.TierStats() {
		free += t.Free()
	}
	n.log.Warn("chunk store full or over the peer's push quota: pushes refused, placed elsewhere by their source",
		"peer", from, "refused", refused, "free_bytes", free)
}

func putStatus(err error) wire.Status {
	switch {
	case errors.Is(err, chunkstore.ErrFull):
		return wire.StatusFull
	case errors.Is(err, chunkstore.ErrTooLarge):
		return wire.StatusRefused
	}
	return wire.StatusFailed
}

// PushStream pushes batches of chunks to one peer over one pipelined
// stream. Use it from one goroutine at a time.
type PushStream struct {
	rs   *reqStream
	peer peer.ID
	st   []wire.Status // decode buffer, used only by the reader goroutine
}

// OpenPush opens a push stream to p for the chunks of h: p keeps them
// until h ends.
func (n *Node) OpenPush(ctx context.Context, p peer.ID, h wire.Hold) (*PushStream, error) {
	if err := h.Validate(); err != nil {
		return nil, err
	}
	s, err := n.host.NewStream(ctx, p, ProtoPush)
	if err != nil {
		return nil, fmt.Errorf("open push stream to %s: %w", p, err)
	}
	_ = s.SetWriteDeadline(time.Now().Add(n.cfg.RequestTimeout))
	if _, err := s.Write(wire.AppendHold(nil, h)); err != nil {
		s.Reset()
		return nil, fmt.Errorf("open push stream to %s: %w", p, err)
	}
	_ = s.SetWriteDeadline(time.Time{})
	return &PushStream{rs: newReqStream(s, n.cfg.PushWindow, n.cfg.RequestTimeout), peer: p}, nil
}

// Peer is the peer this stream pushes to.
func (ps *PushStream) Peer() peer.ID { return ps.peer }

// Push sends one batch (at most wire.MaxBatch chunks, and a frame of at most
// wire.MaxFrameSize) and returns once it is written; done is called exactly
// once, with one status per chunk when the peer acknowledges, or with an
// error (also when Push itself fails: its error only says to stop using
// the stream). The statuses are valid only during done. chunks may be
// reused once Push returns.
func (ps *PushStream) Push(ctx context.Context, chunks []wire.Chunk, done func([]wire.Status, error)) error {
	want, digest := len(chunks), wire.PushDigest(chunks)
	return ps.rs.send(ctx, func(dst []byte) []byte { return wire.AppendPush(dst, chunks) },
		func(t wire.Type, payload []byte, err error) {
			if err == nil {
				err = expect(t, payload, wire.TypePushAck)
			}
			if err == nil {
				ps.st, err = decodePushAck(payload, ps.st, want, digest)
			}
			if err != nil {
				done(nil, fmt.Errorf("push to %s: %w", ps.peer, err))
				return
			}
			done(ps.st, nil)
		})
}

// Close waits for every outstanding acknowledgement, then closes the stream.
func (ps *PushStream) Close() error { return ps.rs.close() }

// Abort resets the stream; outstanding batches fail.
func (ps *PushStream) Abort() { ps.rs.abort() }

// Push sends one batch to p for h on its own stream and waits for the
// statuses.
func (n *Node) Push(ctx context.Context, p peer.ID, h wire.Hold, chunks []wire.Chunk) ([]wire.Status, error) {
	if err := h.Validate(); err != nil {
		return nil, err
	}
	var out []wire.Status
	digest := wire.PushDigest(chunks)
	err := n.call(ctx, p, ProtoPush, func(dst []byte) []byte { return append(wire.AppendHold(dst, h), wire.AppendPush(nil, chunks)...) },
		wire.TypePushAck, func(payload []byte) error {
			var err error
			out, err = decodePushAck(payload, nil, len(chunks), digest)
			return err
		})
	return out, err
}

// ErrStoredOtherBytes is a push answered with a digest of other IDs than
// those pushed: the peer stored other bytes than were sent (a faulty or
// lying peer). None of the batch counts as stored there.
var ErrStoredOtherBytes = errors.New("peer acknowledged other chunks than were pushed")

// decodePushAck decodes the answer to a push of want chunks whose IDs
// digest to digest, appending the statuses to st[:0].
func decodePushAck(payload []byte, st []wire.Status, want int, digest chunk.ID) ([]wire.Status, error) {
	st, got, err := wire.DecodePushAck(payload, st)
	switch {
	case err != nil:
		return st, err
	case len(st) != want:
		return st, fmt.Errorf("push-ack has %d statuses for %d chunks: %w", len(st), want, wire.ErrMalformed)
	case got != digest:
		return st, ErrStoredOtherBytes
	}
	return st, nil
}
