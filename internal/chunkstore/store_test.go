package chunkstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/sgrelay/sg/internal/chunk"
)

func TestIndexEntrySize(t *testing.T) {
	if s := unsafe.Sizeof(indexEntry{}); s != 44 {
		t.Fatalf("indexEntry is %d bytes; memoryBytes assumes 44", s)
	}
}

func TestIndexBytesPerChunk(t *testing.T) {
	x := newIndex()
	var worst float64
	for i := 1; i <= 1<<20; i++ {
		id, _ := testChunk(i, 8)
		x.set(id, location{seg: 1, off: uint32(i)})
		// Check just after every growth, where the table is emptiest, and
		// at round numbers.
		if i&(i-1) == 0 || i%100000 == 0 {
			if i < 10000 {
				continue // fixed overheads dominate tiny indexes
			}
			per := float64(x.memoryBytes()) / float64(i)
			worst = max(worst, per)
			if per > 64 {
				t.Fatalf("%d chunks: %.1f bytes per chunk, budget 64", i, per)
			}
		}
	}
	t.Logf("worst index overhead: %.1f bytes per chunk", worst)
}

func TestIndexDeleteKeepsProbeChains(t *testing.T) {
	x := newIndex()
	ids := make([]chunk.ID, 5000)
	for i := range ids {
		ids[i], _ = testChunk(i, 8)
		x.set(ids[i], location{off: uint32(i)})
	}
	for i := 0; i < len(ids); i += 3 {
		if _, ok := x.remove(ids[i]); !ok {
			t.Fatalf("remove %d: not found", i)
		}
	}
	for i, id := range ids {
		loc, ok := x.get(id)
		if deleted := i%3 == 0; ok == deleted {
			t.Fatalf("entry %d: present=%v after deleting every third", i, ok)
		}
		if ok && loc.off != uint32(i) {
			t.Fatalf("entry %d: wrong location %d", i, loc.off)
		}
	}
	if x.n != len(ids)-(len(ids)+2)/3 {
		t.Fatalf("count %d", x.n)
	}
}

func TestDiskReopen(t *testing.T) {
	dir := t.TempDir()
	d, err := OpenDisk(DiskConfig{Dir: dir, Budget: 64 << 20, SegmentSize: 1 << 20})
	must(t, err)
	var ids []chunk.ID
	for i := range 600 { // 600 × 4 KiB spans several 1 MiB segments
		id, data := testChunk(i, 4096)
		must(t, d.Put(id, data))
		ids = append(ids, id)
	}
	must(t, d.Delete(ids[0]))
	must(t, d.Close())

	d, err = OpenDisk(DiskConfig{Dir: dir, Budget: 64 << 20, SegmentSize: 1 << 20})
	must(t, err)
	defer d.Close()
	if st := d.Stats(); st.Chunks != 600 {
		// The delete was not compacted, so the chunk is back (documented).
		t.Fatalf("reopened with %d chunks, want 600", st.Chunks)
	}
	for i, id := range ids {
		_, want := testChunk(i, 4096)
		got, err := d.Get(id, nil)
		if err != nil || string(got) != string(want) {
			t.Fatalf("chunk %d after reopen: %v", i, err)
		}
	}
}

func TestDiskSecondOpenRefused(t *testing.T) {
	dir := t.TempDir()
	d, err := OpenDisk(DiskConfig{Dir: dir, Budget: 1 << 20})
	must(t, err)
	defer d.Close()
	if _, err := OpenDisk(DiskConfig{Dir: dir, Budget: 1 << 20}); err == nil {
		t.Fatal("a second OpenDisk of the same directory succeeded")
	}
}

func TestDiskTornTailDropped(t *testing.T) {
	dir := t.TempDir()
	d, err := OpenDisk(DiskConfig{Dir: dir, Budget: 64 << 20})
	must(t, err)
	for i := range 10 {
		id, data := testChunk(i, 4096)
		must(t, d.Put(id, data))
	}
	must(t, d.Close())
	seg := filepath.Join(dir, "00000000"+segmentExt)
	full, err := os.ReadFile(seg)
	must(t, err)

	cases := map[string][]byte{
		// Cut mid-data of the last record.
		"cut data": full[:len(full)-100],
		// Cut mid-header of an extra record.
		"cut header": append(append([]byte{}, full...), full[:20]...),
		// A whole extra record whose data is damaged.
		"bad crc": append(append([]byte{}, full...), corruptLast(full[:recordHeader+4096])...),
	}
	for name, img := range cases {
		t.Run(name, func(t *testing.T) {
			must(t, os.WriteFile(seg, img, 0o600))
			d, err := OpenDisk(DiskConfig{Dir: dir, Budget: 64 << 20})
			must(t, err)
			defer d.Close()
			st := d.Stats()
			want := int64(10)
			if name == "cut data" {
				want = 9
			}
			if st.Chunks != want {
				t.Fatalf("%d chunks after open, want %d", st.Chunks, want)
			}
			if d.Dropped() == 0 {
				t.Fatal("nothing reported dropped")
			}
			d.Range(func(id chunk.ID, _ int) bool {
				got, err := d.Get(id, nil)
				if err != nil || chunk.Sum(got) != id {
					t.Errorf("chunk %s does not verify: %v", id.Short(), err)
				}
				return true
			})
			fi, err := os.Stat(seg)
			must(t, err)
			if fi.Size() != want*(recordHeader+4096) {
				t.Fatalf("segment is %d bytes after open: torn tail not truncated", fi.Size())
			}
			// A new Put after the truncation must land cleanly.
			id, data := testChunk(99, 4096)
			must(t, d.Put(id, data))
			got, err := d.Get(id, nil)
			if err != nil || string(got) != string(data) {
				t.Fatalf("put after truncation: %v", err)
			}
		})
	}
}

func corruptLast(rec []byte) []byte {
	out := append([]byte{}, rec...)
	out[len(out)-1] ^= 0xff
	return out
}

func TestDiskDetectsBitRot(t *testing.T) {
	dir := t.TempDir()
	d, err := OpenDisk(DiskConfig{Dir: dir, Budget: 64 << 20})
	must(t, err)
	defer d.Close()
	id, data := testChunk(1, 4096)
	must(t, d.Put(id, data))
	must(t, d.Sync())
	// Flip a data byte behind the tier's back.
	f, err := os.OpenFile(filepath.Join(dir, "00000000"+segmentExt), os.O_RDWR, 0)
	must(t, err)
	_, err = f.WriteAt([]byte{data[2000] ^ 1}, recordHeader+2000)
	must(t, err)
	f.Close()
	if _, err := d.Get(id, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get of a rotten record: %v, want ErrCorrupt", err)
	}
}

func TestPinsAndGC(t *testing.T) {
	s, err := Open(Config{MemoryBudget: 16 << 10, DiskDir: t.TempDir(), DiskBudget: 64 << 20, SegmentSize: 64 << 10})
	must(t, err)
	defer s.Close()
	var kept, freed []chunk.ID
	for i := range 100 {
		id, data := testChunk(i, 4096)
		must(t, s.Put(id, data))
		if i%4 == 0 {
			kept = append(kept, id)
		} else {
			freed = append(freed, id)
		}
	}
	s.Pin("migration-1", kept...)
	s.Pin("migration-2", kept[:5]...)
	res, err := s.GC()
	must(t, err)
	if res.Chunks != int64(len(freed)) {
		t.Fatalf("GC freed %d chunks, want %d", res.Chunks, len(freed))
	}
	if res.Compacted == 0 {
		t.Fatal("GC compacted nothing although most segments were dead")
	}
	for _, id := range freed {
		if s.Has(id) {
			t.Fatal("unpinned chunk survived GC")
		}
	}
	for _, id := range kept {
		got, err := s.Get(id, nil)
		if err != nil || chunk.Sum(got) != id {
			t.Fatalf("pinned chunk lost or corrupted by GC/compaction: %v", err)
		}
	}
	if n := s.Unpin("migration-1"); n != len(kept) {
		t.Fatalf("Unpin dropped %d, want %d", n, len(kept))
	}
	res, err = s.GC()
	must(t, err)
	if res.Chunks != int64(len(kept)-5) {
		t.Fatalf("second GC freed %d, want %d (5 still pinned by migration-2)", res.Chunks, len(kept)-5)
	}
	if st := s.Stats(); st.Chunks != 5 {
		t.Fatalf("%d chunks left, want 5", st.Chunks)
	}
}

func TestConfigValidate(t *testing.T) {
	cases := map[string]Config{
		"negative memory":  {MemoryBudget: -1},
		"disk without dir": {MemoryBudget: 1, DiskBudget: 1},
		"nothing":          {},
	}
	for name, c := range cases {
		if c.Validate() == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

// A chunk held by two holders, or pinned, survives one holder's Free; the
// last Free deletes it; a Free without deletion leaves it to GC.
func TestHoldAndFree(t *testing.T) {
	s, err := Open(Config{MemoryBudget: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ids []chunk.ID
	var data [][]byte
	for i := range 4 {
		d := []byte{byte(i), 1, 2, 3}
		ids, data = append(ids, chunk.Sum(d)), append(data, d)
	}
	// Held before they are stored, as a push does: the holds brought them.
	if n := s.Hold("a", ids[0], ids[1], ids[1]); n != 2 { // held twice by a: counted once
		t.Fatalf("Hold(a) added %d, want 2", n)
	}
	s.Hold("b", ids[1], ids[2])
	s.Pin("gather", ids[2])
	s.Hold("c", ids[3])
	for i := range ids {
		if err := s.Put(ids[i], data[i]); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Held("a"); n != 2 {
		t.Fatalf("a holds %d, want 2", n)
	}
	freed, err := s.Free("a", true)
	if err != nil || len(freed) != 1 || freed[0] != ids[0] {
		t.Fatalf("Free(a) = %v, %v; want only the chunk a alone held", freed, err)
	}
	if !s.Has(ids[1]) || s.Has(ids[0]) {
		t.Fatal("a's Free deleted b's chunk or kept its own")
	}
	if freed, _ := s.Free("b", true); len(freed) != 1 || freed[0] != ids[1] || !s.Has(ids[2]) {
		t.Fatalf("Free(b) = %v: want the chunk b alone held, not the pinned one", freed)
	}
	if freed, _ := s.Free("c", false); len(freed) != 0 || !s.Has(ids[3]) || s.Pinned(ids[3]) {
		t.Fatal("a Free without deletion deleted, or left the chunk held")
	}
}

// A hold on a chunk that was stored before any hold took it (a peer
// pushing bytes it knows) never deletes it on Free; a chunk the hold
// brought is deleted; DeleteUnpinned keeps what a hold keeps.
func TestFreeDeletesOnlyWhatHoldsBrought(t *testing.T) {
	s, err := Open(Config{MemoryBudget: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	present, pushed := []byte("already here"), []byte("brought by the hold")
	pid, nid := chunk.Sum(present), chunk.Sum(pushed)
	if err := s.Put(pid, present); err != nil {
		t.Fatal(err)
	}
	s.Hold("attacker", pid, nid)
	if err := s.Put(nid, pushed); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.DeleteUnpinned(pid); n != 0 || !s.Has(pid) {
		t.Fatal("DeleteUnpinned deleted a held chunk")
	}
	freed, err := s.Free("attacker", true)
	if err != nil || len(freed) != 1 || freed[0] != nid {
		t.Fatalf("Free = %v, %v; want only the chunk the hold brought", freed, err)
	}
	if !s.Has(pid) || s.Pinned(pid) {
		t.Fatal("the chunk that was here before the hold was deleted, or left pinned")
	}
	// Held again after it was freed, it is still not the hold's to delete.
	s.Hold("attacker", pid)
	if freed, _ := s.Free("attacker", true); len(freed) != 0 || !s.Has(pid) {
		t.Fatalf("a second hold on a present chunk deleted it: %v", freed)
	}
	if n, err := s.DeleteUnpinned(pid); err != nil || n != len(present) || s.Has(pid) {
		t.Fatalf("DeleteUnpinned of an unpinned chunk = %d, %v", n, err)
	}
}

// TestMemoryReusesFreedBuffers checks that a deleted chunk's buffer serves a
// later Put (no fresh heap), and that the reused buffer holds the new
// chunk's bytes only.
func TestMemoryReusesFreedBuffers(t *testing.T) {
	m := NewMemory(1 << 20)
	id1, d1 := testChunk(1, 64<<10)
	id2, d2 := testChunk(2, 64<<10)
	if err := m.Put(id1, d1); err != nil {
		t.Fatal(err)
	}
	first := &m.chunks[id1][0]
	if err := m.Delete(id1); err != nil {
		t.Fatal(err)
	}
	if err := m.Put(id2, d2); err != nil {
		t.Fatal(err)
	}
	if &m.chunks[id2][0] != first {
		t.Fatal("Put after Delete did not reuse the freed buffer")
	}
	got, err := m.Get(id2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, d2) {
		t.Fatal("reused buffer returned other bytes")
	}
	if _, err := m.Get(id1, nil); err != ErrNotFound {
		t.Fatalf("deleted chunk: got %v, want ErrNotFound", err)
	}
	if s := m.Stats(); s.Bytes != int64(len(d2)) || s.Chunks != 1 {
		t.Fatalf("stats %+v after reuse", s)
	}
}
