package node

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/wire"
)

// pushLog remembers the IDs of recently stored pushes by their digest, so
// that a destination can learn where a push's chunks go from a placement
// naming the push, not each chunk. It asks soon after the source placed
// the push; oldest pushes are forgotten first, and one asked for too late
// is answered "missing" (the destination then has the manifest sent).
type pushLog struct {
	limit int // IDs kept at most
	mu    sync.Mutex
	ids   map[chunk.ID][]chunk.ID
	order []chunk.ID // digests, oldest first
	n     int        // IDs held
}

func newPushLog(limit int) *pushLog { return &pushLog{limit: limit, ids: map[chunk.ID][]chunk.ID{}} }

// add records a push every chunk of which was stored.
func (l *pushLog) add(digest chunk.ID, chunks []wire.Chunk) {
	if l.limit <= 0 {
		return
	}
	ids := make([]chunk.ID, len(chunks))
	for i := range chunks {
		ids[i] = chunks[i].ID
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.ids[digest]; ok {
		return
	}
	l.ids[digest] = ids
	l.order = append(l.order, digest)
	l.n += len(ids)
	for l.n > l.limit && len(l.order) > 1 {
		l.n -= len(l.ids[l.order[0]])
		delete(l.ids, l.order[0])
		l.order = l.order[1:]
	}
}

func (l *pushLog) get(digest chunk.ID) ([]chunk.ID, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids, ok := l.ids[digest]
	return ids, ok
}

func (n *Node) handlePushIDs(s network.Stream) {
	n.handler(ProtoPushIDs, wire.TypePushIDs, func(_ peer.ID, payload, dst []byte) ([]byte, error) {
		digest, err := wire.DecodePushIDs(payload)
		if err != nil {
			return dst, err
		}
		if ids, ok := n.pushes.get(digest); ok {
			return wire.AppendPushIDsAck(dst, wire.StatusOK, ids), nil
		}
		return wire.AppendPushIDsAck(dst, wire.StatusMissing, nil), nil
	})(s)
}

// PushIDs asks p for the IDs of a push it stored, by the push's digest,
// and checks that they hash to it. This node's own pushes are looked up
// here.
func (n *Node) PushIDs(ctx context.Context, p peer.ID, digest chunk.ID) ([]chunk.ID, error) {
	if p == n.host.ID() {
		return n.ownPushIDs(digest)
	}
	var ids []chunk.ID
	err := n.call(ctx, p, ProtoPushIDs, func(dst []byte) []byte { return wire.AppendPushIDs(dst, digest) },
		wire.TypePushIDsAck, func(payload []byte) error {
			var err error
			ids, err = decodePushIDsAnswer(wire.TypePushIDsAck, payload, digest, p)
			return err
		})
	return ids, err
}

// ownPushIDs looks a push this node stored up in its own log.
func (n *Node) ownPushIDs(digest chunk.ID) ([]chunk.ID, error) {
	ids, ok := n.pushes.get(digest)
	if !ok {
		return nil, fmt.Errorf("push %s: %w", digest.Short(), errPushUnknown)
	}
	return ids, nil
}

// decodePushIDsAnswer decodes p's answer to a question about the push
// digest and checks that the IDs hash to it.
func decodePushIDsAnswer(t wire.Type, payload []byte, digest chunk.ID, p peer.ID) ([]chunk.ID, error) {
	if err := expect(t, payload, wire.TypePushIDsAck); err != nil {
		return nil, err
	}
	st, ids, err := wire.DecodePushIDsAck(payload, nil)
	switch {
	case err != nil:
		return nil, err
	case st != wire.StatusOK:
		return nil, fmt.Errorf("push %s at %s: %w", digest.Short(), p, errPushUnknown)
	case wire.IDsDigest(ids) != digest:
		return nil, fmt.Errorf("push %s: %s answered IDs that hash to something else: %w", digest.Short(), p, wire.ErrMalformed)
	}
	return ids, nil
}

var errPushUnknown = errors.New("the holder does not remember that push")
