package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/node"
	"github.com/sgrelay/sg/internal/wire"
)

// A source that re-places the one position of its migration with ever
// new chunks (to grow the destination's pins and holder map without
// bound) has its frame refused whole, with the reason: none of the new
// chunks is pinned or given holders, and the position keeps its chunk.
func TestHostileReplacementRefused(t *testing.T) {
	nodes := newTestNodes(t, 2, nil)
	src, dst := nodes[0], nodes[1]
	connect(t, src, dst)
	roles := Serve(t.Context(), dst.Node, dst.store, Config{Dir: t.TempDir(),
		OnGatherDone: func(*fetch.Incoming, *fetch.Gatherer, fetch.Report, error) {}})
	t.Cleanup(roles.Wait)

	o := wire.Open{ID: migrationID(), VM: "web1", Regions: []wire.RegionInfo{{Name: "mem", Size: 4096, ChunkSize: 4096}}}
	s, err := src.Host().NewStream(t.Context(), dst.ID(), node.ProtoMigrate)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	s.SetDeadline(time.Now().Add(10 * time.Second))
	rd := wire.NewReader(s, 0)
	first := chunk.Sum([]byte("first"))
	for _, f := range [][]byte{wire.AppendOpen(nil, o),
		wire.AppendHolders(nil, []wire.Holder{{Index: 0, Peer: src.ID().String()}}),
		wire.AppendPlacements(nil, []wire.Placement{{Index: 0, ID: first, Holders: 1}}, false),
		wire.AppendPlacements(nil, []wire.Placement{{Index: 0, ID: first, Holders: 1}}, false), // the same again: fine
	} {
		if _, err := s.Write(f); err != nil {
			t.Fatal(err)
		}
		p, err := rd.Expect(wire.TypeAck)
		if err != nil {
			t.Fatal(err)
		}
		if st, msg, err := wire.DecodeAck(p); err != nil || st != wire.StatusOK {
			t.Fatalf("honest frame answered %v %q %v", st, msg, err)
		}
	}
	in, err := roles.Incomings().Get(o.ID)
	if err != nil {
		t.Fatal(err)
	}

	var hostile []wire.Placement
	for i := range 512 {
		hostile = append(hostile, wire.Placement{Index: 0, ID: chunk.Sum([]byte{byte(i), byte(i >> 8)}), Holders: 1})
	}
	if _, err := s.Write(wire.AppendPlacements(nil, hostile, false)); err != nil {
		t.Fatal(err)
	}
	// A refusal is an error ack, then the stream ends (which may overtake the ack).
	if p, err := rd.Expect(wire.TypeAck); err == nil {
		st, msg, err := wire.DecodeAck(p)
		if err != nil || st == wire.StatusOK || !strings.Contains(msg, fetch.ErrPlacementChanged.Error()) {
			t.Fatalf("re-placement answered %v %q %v: want a refusal saying why", st, msg, err)
		}
	}
	for _, p := range hostile {
		if dst.store.Pinned(p.ID) {
			t.Fatalf("re-placed chunk %s pinned", p.ID)
		}
	}
	if st := in.Status(); st.Named != 1 || st.Placed != 1 {
		t.Fatalf("%d chunks named with holders, %d positions placed: want 1, 1", st.Named, st.Placed)
	}
	if id, ok := in.At(0, 0); !ok || id != first {
		t.Fatalf("the position holds %v, want %v", id, first)
	}
	if h := in.Holders(first); len(h) != 1 {
		t.Fatalf("holders of the placed chunk: %v", h)
	}
}
