package node

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/wire"
)

// A request that announces more than its protocol's largest well-formed
// frame (a get of 8 MiB) is refused at its header: the stream is reset at
// once, without waiting for the bytes, and an honest peer is served.
func TestHostileOversizedRequestRefusedAtHeader(t *testing.T) {
	nodes := newTestNodes(t, 3, nil)
	evil, victim, honest := nodes[0], nodes[1], nodes[2]
	connect(t, evil, victim)
	connect(t, honest, victim)
	s, err := evil.Host().NewStream(t.Context(), victim.ID(), ProtoGet)
	must(t, err)
	defer s.Reset()
	frame := make([]byte, 4+1+1<<10)
	binary.BigEndian.PutUint32(frame, wire.MaxFrameSize)
	frame[4] = byte(wire.TypeGet)
	_, err = s.Write(frame)
	must(t, err)
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = wire.NewReader(s, 0).Expect(wire.TypeGetAck)
	var ne interface{ Timeout() bool }
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("an 8 MiB get header: %v, want the stream refused at once", err)
	}
	t.Logf("refused: %v", err)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := honest.Have(ctx, victim.ID(), []chunk.ID{chunk.Sum([]byte("y"))}); err != nil {
		t.Fatalf("an honest peer's have: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
