package fetch

import (
	"errors"
	"testing"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/wire"
)

// A source that re-places a position with other chunks, frame after
// frame, would grow the holders and pins of a one-position migration
// without bound: such a frame is refused whole, nothing of it recorded
// or pinned; placing a position again with its own chunk is fine.
func TestPlacementCannotChangeAPosition(t *testing.T) {
	store, err := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s := NewIncomings(store)
	in, err := s.Open("src", openOf(1, 2*4096)) // 2 positions
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := chunk.Sum([]byte("a")), chunk.Sum([]byte("b")), chunk.Sum([]byte("c"))
	if err := s.AddPlacements("src", in.ID, []wire.Placement{{Index: 0, ID: a, Holders: 1}}); err != nil {
		t.Fatal(err)
	}
	// Same chunk again, with other holders: accepted, and the holders add up.
	if err := s.AddPlacements("src", in.ID, []wire.Placement{{Index: 0, ID: a, Holders: 2}}); err != nil {
		t.Fatalf("the same placement again: %v", err)
	}
	refused := [][]wire.Placement{
		{{Index: 1, ID: c, Holders: 1}, {Index: 0, ID: b, Holders: 1}}, // a placed position, another chunk
		{{Index: 1, ID: c, Holders: 1}, {Index: 1, ID: b, Holders: 1}}, // twice in one frame
	}
	for _, ps := range refused {
		if err := s.AddPlacements("src", in.ID, ps); !errors.Is(err, ErrPlacementChanged) {
			t.Fatalf("%v: %v, want ErrPlacementChanged", ps, err)
		}
	}
	if store.Pinned(b) || store.Pinned(c) {
		t.Fatal("a refused frame pinned chunks")
	}
	if id, ok := in.At(0, 0); !ok || id != a {
		t.Fatalf("position 0 is %v, want %v", id, a)
	}
	if _, ok := in.At(0, 1); ok {
		t.Fatal("a refused frame placed position 1")
	}
	in.mu.Lock()
	holders, placed, ha := len(in.holders), in.placed, in.holders[a]
	in.mu.Unlock()
	if holders != 1 || placed != 1 || ha != 3 {
		t.Fatalf("%d holder entries, %d placed, holders of a %b; want 1, 1, 11", holders, placed, ha)
	}
	if !store.Pinned(a) {
		t.Fatal("the placed chunk is not pinned")
	}
}
