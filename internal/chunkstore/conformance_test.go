package chunkstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"github.com/sgrelay/sg/internal/chunk"
)

// testChunk makes a deterministic chunk of size bytes from seed.
func testChunk(seed, size int) (chunk.ID, []byte) {
	d := make([]byte, size)
	for i := 0; i+8 <= size; i += 8 {
		binary.LittleEndian.PutUint64(d[i:], uint64(seed)*0x9e3779b97f4a7c15+uint64(i))
	}
	d[0] = byte(seed) | 1
	return chunk.Sum(d), d
}

// newTierFunc builds an empty tier whose budget holds roughly budget bytes.
type newTierFunc func(t testing.TB, budget int64) Tier

// runConformance is the one suite every tier must pass.
func runConformance(t *testing.T, newTier newTierFunc) {
	t.Run("PutGetHas", func(t *testing.T) {
		tr := newTier(t, 1<<20)
		id, data := testChunk(1, 4096)
		if tr.Has(id) {
			t.Fatal("empty tier has a chunk")
		}
		if _, err := tr.Get(id, nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get missing: %v, want ErrNotFound", err)
		}
		must(t, tr.Put(id, data))
		data[5] ^= 0xff // the tier must not keep the caller's buffer
		data[5] ^= 0xff
		if !tr.Has(id) {
			t.Fatal("Has after Put is false")
		}
		got, err := tr.Get(id, make([]byte, 10, 100))
		must(t, err)
		if !bytes.Equal(got, data) {
			t.Fatal("Get returned other bytes")
		}
	})
	t.Run("PutIsIdempotent", func(t *testing.T) {
		tr := newTier(t, 1<<20)
		id, data := testChunk(2, 4096)
		must(t, tr.Put(id, data))
		before := tr.Stats()
		must(t, tr.Put(id, data))
		if after := tr.Stats(); after.Chunks != before.Chunks || after.Bytes != before.Bytes {
			t.Fatalf("second Put changed stats: %+v -> %+v", before, after)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		tr := newTier(t, 1<<20)
		id, data := testChunk(3, 65536)
		must(t, tr.Put(id, data))
		must(t, tr.Delete(id))
		must(t, tr.Delete(id))
		if tr.Has(id) {
			t.Fatal("Has after Delete")
		}
		if st := tr.Stats(); st.Chunks != 0 || st.Bytes != 0 {
			t.Fatalf("stats after delete: %+v", st)
		}
	})
	t.Run("Budget", func(t *testing.T) {
		tr := newTier(t, 64<<10)
		var stored int
		var err error
		for i := range 100 {
			id, data := testChunk(100+i, 4096)
			if err = tr.Put(id, data); err != nil {
				break
			}
			stored++
		}
		if !errors.Is(err, ErrFull) {
			t.Fatalf("after %d puts: %v, want ErrFull", stored, err)
		}
		if stored < 10 || stored > 16 {
			t.Fatalf("a 64 KiB budget stored %d 4 KiB chunks", stored)
		}
		if st := tr.Stats(); st.Used > st.Budget {
			t.Fatalf("used %d over budget %d", st.Used, st.Budget)
		}
	})
	t.Run("TooLarge", func(t *testing.T) {
		tr := newTier(t, 4<<20)
		big := make([]byte, MaxChunkSize+1)
		big[0] = 1
		if err := tr.Put(chunk.Sum(big), big); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("Put of %d bytes: %v, want ErrTooLarge", len(big), err)
		}
	})
	t.Run("RangeAndStats", func(t *testing.T) {
		tr := newTier(t, 4<<20)
		want := map[chunk.ID]int{}
		for i := range 50 {
			id, data := testChunk(200+i, 1000+i)
			must(t, tr.Put(id, data))
			want[id] = len(data)
		}
		var total int64
		tr.Range(func(id chunk.ID, size int) bool {
			if want[id] != size {
				t.Errorf("Range: %s size %d, want %d", id.Short(), size, want[id])
			}
			delete(want, id)
			total += int64(size)
			return true
		})
		if len(want) != 0 {
			t.Fatalf("Range missed %d chunks", len(want))
		}
		if st := tr.Stats(); st.Chunks != 50 || st.Bytes != total {
			t.Fatalf("stats %+v, want 50 chunks and %d bytes", st, total)
		}
		must(t, tr.Sync())
	})
	t.Run("Concurrent", func(t *testing.T) {
		tr := newTier(t, 16<<20)
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				buf := make([]byte, 0, 8192)
				for i := range 200 {
					id, data := testChunk(1000+w*100+i%50, 4096) // disjoint per worker
					if err := tr.Put(id, data); err != nil {
						t.Error(err)
						return
					}
					got, err := tr.Get(id, buf)
					if err != nil || !bytes.Equal(got, data) {
						t.Errorf("concurrent Get: %v", err)
						return
					}
					if i%10 == 0 {
						_ = tr.Delete(id)
					}
				}
			})
		}
		wg.Wait()
	})
	t.Run("GetAfterClose", func(t *testing.T) {
		tr := newTier(t, 1<<20)
		id, data := testChunk(9, 512)
		must(t, tr.Put(id, data))
		must(t, tr.Close())
		if _, err := tr.Get(id, nil); err == nil {
			t.Fatal("Get after Close succeeded")
		}
	})
}

func TestMemoryConformance(t *testing.T) {
	runConformance(t, func(t testing.TB, budget int64) Tier {
		m := NewMemory(budget)
		t.Cleanup(func() { m.Close() })
		return m
	})
}

func TestDiskConformance(t *testing.T) {
	runConformance(t, func(t testing.TB, budget int64) Tier {
		d, err := OpenDisk(DiskConfig{Dir: t.TempDir(), Budget: budget, SegmentSize: 256 << 10})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	})
}

func TestStoreConformance(t *testing.T) {
	// Half the budget in memory, half on disk: every case crosses the spill.
	runConformance(t, func(t testing.TB, budget int64) Tier {
		s, err := Open(Config{MemoryBudget: budget / 2, DiskDir: t.TempDir(), DiskBudget: budget / 2, SegmentSize: 256 << 10})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
