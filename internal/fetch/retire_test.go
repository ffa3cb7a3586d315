package fetch_test

import (
	"errors"
	"testing"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/fetch"
)

// A migration that ends is removed: its pins, per-position state and
// files are dropped, its source's later frames are refused, and reads of
// its gather fail cleanly instead of touching dropped state.
func TestRetiredMigrationHoldsNothing(t *testing.T) {
	net := newGnet("src")
	holders := []string{"r1"}
	net.peer("r1", time.Millisecond)
	local, _ := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 30})
	f := newFixture(t, net, local, smallSpec(3), func(chunk.ID) []uint8 { return []uint8{0} }, holders)
	in, g := f.start(t, holders, fetch.DefaultGatherConfig(t.TempDir()))
	// Half the placements arrive, then the source dies mid-scatter.
	half := f.placements[:len(f.placements)/2]
	if err := f.incomings.AddPlacements("src", f.open.ID, half); err != nil {
		t.Fatal(err)
	}
	if !local.Pinned(half[0].ID) {
		t.Fatal("a placed chunk is not pinned while its migration is open")
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(t.Context()) }()
	f.incomings.Abandon("src", f.open.ID, errors.New("source killed"))
	if err := <-done; !errors.Is(err, fetch.ErrAbandoned) {
		t.Fatalf("Run = %v, want ErrAbandoned", err)
	}

	if !f.incomings.Remove(f.open.ID) {
		t.Fatal("Remove found no migration")
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if f.incomings.Len() != 0 || len(f.incomings.List()) != 0 {
		t.Fatalf("%d migrations still open", f.incomings.Len())
	}
	if local.Pinned(half[0].ID) {
		t.Fatal("a removed migration still pins its chunks")
	}
	if _, err := f.incomings.Get(f.open.ID); !errors.Is(err, fetch.ErrUnknownMigration) {
		t.Fatalf("Get after Remove = %v", err)
	}
	// The dead source's frames (or a replay) find nothing to grow.
	if err := f.incomings.AddPlacements("src", f.open.ID, f.placements[len(half):]); !errors.Is(err, fetch.ErrUnknownMigration) {
		t.Fatalf("AddPlacements after Remove = %v, want ErrUnknownMigration", err)
	}
	if err := f.incomings.Finish("src", f.open.ID, f.root, false); !errors.Is(err, fetch.ErrUnknownMigration) {
		t.Fatalf("Finish after Remove = %v, want ErrUnknownMigration", err)
	}
	if _, ok := in.At(0, 0); ok {
		t.Fatal("a removed migration still answers a position")
	}
	if st := in.Status(); st.Chunks == 0 {
		t.Fatal("Status of a removed migration lost its size")
	}
	buf := make([]byte, 4096)
	if _, err := g.ReadAt(t.Context(), 0, buf, 0); !errors.Is(err, fetch.ErrClosed) && !errors.Is(err, fetch.ErrAbandoned) {
		t.Fatalf("ReadAt after Close = %v, want ErrClosed", err)
	}
	if ids := g.ChunkIDs(); len(ids) != 0 {
		t.Fatalf("a closed gather still lists %d chunks", len(ids))
	}
	if f.incomings.Remove(f.open.ID) {
		t.Fatal("Remove of a removed migration reported success")
	}
}
