package node

import (
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/wire"
)

// A destination learns a push's IDs from the relay that stored it, by the
// push's digest, and from its own log for pushes it stored itself.
func TestPushIDsFromHolder(t *testing.T) {
	nodes := newTestNodes(t, 3, nil)
	src, relay, dest := nodes[0], nodes[1], nodes[2]
	connect(t, src, relay)
	connect(t, src, dest)
	connect(t, dest, relay)
	toRelay, toDest := randomChunks(3, 4096), randomChunks(2, 4096)
	pushOnce(t, src, relay, toRelay)
	pushOnce(t, src, dest, toDest)
	ids, err := dest.PushIDs(t.Context(), relay.ID(), wire.PushDigest(toRelay))
	if err != nil || len(ids) != 3 || ids[2] != toRelay[2].ID {
		t.Fatalf("IDs from the relay: %v, %v", ids, err)
	}
	if ids, err := dest.PushIDs(t.Context(), dest.ID(), wire.PushDigest(toDest)); err != nil || ids[1] != toDest[1].ID {
		t.Fatalf("IDs of its own push: %v, %v", ids, err)
	}
	if _, err := dest.PushIDs(t.Context(), relay.ID(), wire.PushDigest(toDest)); !errors.Is(err, errPushUnknown) {
		t.Fatalf("a push the relay did not store: %v, want errPushUnknown", err)
	}
}

// A holder answering IDs that do not hash to the digest is not believed.
func TestPushIDsLyingHolder(t *testing.T) {
	nodes := newTestNodes(t, 2, nil)
	liar, dest := nodes[0], nodes[1]
	connect(t, liar, dest)
	other := []chunk.ID{chunk.Sum([]byte("not"))}
	liar.Host().SetStreamHandler(ProtoPushIDs, func(s network.Stream) {
		defer s.Close()
		if _, _, err := wire.NewReader(s, 1<<16).Next(); err == nil {
			_, _ = s.Write(wire.AppendPushIDsAck(nil, wire.StatusOK, other))
		}
	})
	if _, err := dest.PushIDs(t.Context(), liar.ID(), chunk.Sum([]byte("digest"))); !errors.Is(err, wire.ErrMalformed) {
		t.Fatalf("IDs that do not hash to the digest: %v, want ErrMalformed", err)
	}
}

// The log forgets its oldest pushes past its limit.
func TestPushLogBounded(t *testing.T) {
	l := newPushLog(4)
	batches := [][]wire.Chunk{randomChunks(2, 8), randomChunks(2, 8), randomChunks(2, 8)}
	for _, b := range batches {
		l.add(wire.PushDigest(b), b)
	}
	if _, ok := l.get(wire.PushDigest(batches[0])); ok {
		t.Fatal("the oldest push is still remembered past the limit")
	}
	for _, b := range batches[1:] {
		if ids, ok := l.get(wire.PushDigest(b)); !ok || ids[0] != b[0].ID {
			t.Fatalf("a recent push forgotten: %v %v", ids, ok)
		}
	}
}
