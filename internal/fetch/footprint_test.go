package fetch_test

import (
	"crypto/rand"
	"runtime"
	"testing"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/wire"
)

// maxStatePerPosition is the documented bound on the memory a migration
// open here holds per chunk position (its Incoming and its Gatherer), the
// "overhead" a destination's RSS may exceed its memory budget by, per
// position of each running migration.
const maxStatePerPosition = 512

// The per-position state of an open migration, every position placed
// with a distinct chunk (the worst case: no dedup), stays within
// maxStatePerPosition; removed and closed, it is given back.
func TestStatePerPositionBounded(t *testing.T) {
	const positions = 1 << 16 // a 256 MiB VM of 4 KiB pages
	store, _ := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 20})
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	ps := make([]wire.Placement, positions)
	for i := range ps {
		var id chunk.ID
		rand.Read(id[:])
		ps[i] = wire.Placement{Region: 0, Index: uint64(i), ID: id, Holders: 1}
	}
	before := heap()
	ins := fetch.NewIncomings(store)
	// open places every position of a new migration and returns it and
	// its gather.
	open := func() (wire.MigrationID, *fetch.Gatherer) {
		o := wire.Open{VM: "vm", Regions: []wire.RegionInfo{{Name: "mem", Size: positions * 4096, ChunkSize: 4096}}}
		rand.Read(o.ID[:])
		in, err := ins.Open("src", o)
		if err != nil {
			t.Fatal(err)
		}
		g, err := fetch.NewGatherer(in, nil, store, fetch.DefaultGatherConfig(t.TempDir()))
		if err != nil {
			t.Fatal(err)
		}
		in.SetListener(g)
		if err := ins.AddHolders("src", o.ID, []wire.Holder{{Index: 0, Peer: "r1"}}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < positions; i += wire.MaxPlacements {
			if err := ins.AddPlacements("src", o.ID, ps[i:min(positions, i+wire.MaxPlacements)]); err != nil {
				t.Fatal(err)
			}
		}
		return o.ID, g
	}
	id, g := open()
	held := heap() - before
	per := float64(held) / positions
	t.Logf("an open migration holds %.0f bytes per position (%d positions, %.1f MiB)", per, positions, float64(held)/(1<<20))
	if per > maxStatePerPosition {
		t.Fatalf("%.0f bytes of state per position, over the documented %d", per, maxStatePerPosition)
	}
	ins.Remove(id)
	g.Close()
	// What stays is the store's pin table at its high-water mark (Go maps
	// do not shrink): it does not grow with the number of migrations.
	first := heap()
	for range 3 {
		id, g := open()
		ins.Remove(id)
		g.Close()
	}
	last := heap()
	t.Logf("after one migration removed: %.1f MiB above the start; after four: %.1f MiB", float64(first-before)/(1<<20), float64(last-before)/(1<<20))
	if first > before+held/4 || last > first+held/10 {
		t.Fatalf("removed migrations keep their state: %d bytes after one, %d after four (one held %d)", first-before, last-before, held)
	}
	runtime.KeepAlive(ps)
	runtime.KeepAlive(store)
}
