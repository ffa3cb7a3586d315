package fetch_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/fetch"
)

// A gather resumed in the directory of an interrupted one keeps every
// chunk its files already hold (one of them damaged, which is fetched
// again), fetches only the rest, and records itself complete.
func TestResumedGatherKeepsWhatItsFilesHold(t *testing.T) {
	net := newGnet("src")
	holders := []string{"r1", "r2"}
	for i, h := range holders {
		net.peer(h, time.Duration(i+1)*time.Millisecond)
	}
	local, _ := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 30})
	f := newFixture(t, net, local, smallSpec(3), func(id chunk.ID) []uint8 { return []uint8{id[0] % 2} }, holders)

	// What the interrupted gather had written: the first half of each
	// region, with one byte of one held chunk damaged.
	dir := filepath.Join(t.TempDir(), "vm-1")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var held int64
	damaged := false
	for ri, data := range f.data {
		cs := net.chunk[ri]
		half := make([]byte, len(data))
		copy(half, data[:len(data)/2])
		for off := 0; off < len(data)/2; off += cs {
			if c := data[off : off+cs]; !chunk.IsZeroData(c) {
				held++
				if !damaged {
					half[off] ^= 1
					damaged = true
				}
			}
		}
		name := []string{"mem", "disk0"}[ri]
		if err := os.WriteFile(filepath.Join(dir, name+".img"), half, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fetch.DefaultGatherConfig(dir)
	cfg.Resume = true
	_, g := f.start(t, holders, cfg)
	done := make(chan error, 1)
	go func() { done <- g.Run(t.Context()) }()
	f.placeAll(t, 4, 0)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkFiles(t, g, f.data)
	rep := g.Report()
	if rep.KeptChunks != held-1 {
		t.Errorf("kept %d chunks, want the %d held intact", rep.KeptChunks, held-1)
	}
	var fetched int64
	for _, b := range rep.FetchedBytes {
		fetched += b
	}
	var rest int64 // bytes of distinct chunks in the second halves, plus the damaged one
	seen := map[chunk.ID]bool{}
	for ri, data := range f.data {
		cs := net.chunk[ri]
		for off := len(data) / 2; off < len(data); off += cs {
			c := data[off:min(len(data), off+cs)]
			if id := chunk.Sum(c); !chunk.IsZeroData(c) && !seen[id] {
				seen[id] = true
				rest += int64(len(c))
			}
		}
	}
	if fetched > rest+int64(net.chunk[1]) {
		t.Errorf("fetched %d bytes; the files lacked at most %d", fetched, rest+int64(net.chunk[1]))
	}
	states, err := fetch.ReadGatherStates(filepath.Dir(dir))
	if err != nil || len(states) != 1 || !states[0].Complete || states[0].Root != f.root.String() {
		t.Fatalf("gather record: %+v, %v", states, err)
	}
}

// A source that gives a migration up before handing over its manifest
// fails the gather (the VM will never be complete here); once the
// manifest is handed over, the source may go.
func TestAbandonedMigrationFailsGather(t *testing.T) {
	for _, finishFirst := range []bool{false, true} {
		net := newGnet("src")
		net.peer("r1", time.Millisecond)
		local, _ := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 30})
		f := newFixture(t, net, local, smallSpec(4), func(chunk.ID) []uint8 { return []uint8{0} }, []string{"r1"})
		_, g := f.start(t, []string{"r1"}, fetch.DefaultGatherConfig(t.TempDir()))
		done := make(chan error, 1)
		go func() { done <- g.Run(t.Context()) }()
		if finishFirst {
			f.placeAll(t, 1, 0)
		} else if err := f.incomings.AddPlacements(f.net.source, f.open.ID, f.placements[:10]); err != nil {
			t.Fatal(err)
		}
		f.incomings.Abandon(f.net.source, f.open.ID, errors.New("eviction failed"))
		err := <-done
		switch {
		case finishFirst && err != nil:
			t.Fatalf("abandoned after the handover: %v", err)
		case !finishFirst && (!errors.Is(err, fetch.ErrGatherFailed) || !strings.Contains(err.Error(), "abandoned")):
			t.Fatalf("abandoned before the handover: %v, want a failed gather saying so", err)
		case !finishFirst && g.Report().Complete:
			t.Fatal("an abandoned gather claims to be complete")
		}
	}
}
