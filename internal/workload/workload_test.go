package workload

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math"
	"testing"
)

func spec(seed uint64) Spec {
	return Spec{Seed: seed, BaseSeed: 7, MemSize: 16 << 20, DiskSize: 8 << 20, PageSize: 4096, DiskBlock: 65536,
		ZeroFrac: 0.3, SharedFrac: 0.2, RepeatFrac: 0.1}
}

func pages(b []byte, size int) map[[32]byte]int {
	out := map[[32]byte]int{}
	for i := 0; i < len(b); i += size {
		out[sha256.Sum256(b[i:i+size])]++
	}
	return out
}

func TestFractionsAndDeterminism(t *testing.T) {
	s := spec(1)
	var m1, d1, m2, d2 bytes.Buffer
	if err := s.Write(&m1, &d1); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(&m2, &d2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m1.Bytes(), m2.Bytes()) || !bytes.Equal(d1.Bytes(), d2.Bytes()) {
		t.Fatal("same spec, different output")
	}
	mem, _ := s.Count()
	for name, c := range map[string]struct {
		got  int64
		want float64
	}{"zero": {mem.Zero, 0.3}, "shared": {mem.Shared, 0.2}, "repeated": {mem.Repeated, 0.1}} {
		frac := float64(c.got) / float64(mem.Pages)
		if math.Abs(frac-c.want) > 0.02 {
			t.Errorf("%s fraction %.3f, want %.2f", name, frac, c.want)
		}
	}
	// Count agrees with the bytes: distinct non-zero pages.
	distinct := pages(m1.Bytes(), 4096)
	zeroKey := sha256.Sum256(make([]byte, 4096))
	delete(distinct, zeroKey)
	if want := mem.Shared + mem.Unique + mem.DistinctRepeated; int64(len(distinct)) != want {
		t.Fatalf("%d distinct non-zero pages, Count says %d", len(distinct), want)
	}
}

func TestSameBaseSharesPages(t *testing.T) {
	var a, b bytes.Buffer
	s1 := spec(1)
	s1.DiskSize = 0
	if err := s1.Write(&a, nil); err != nil {
		t.Fatal(err)
	}
	s2 := spec(2)
	s2.DiskSize = 0
	if err := s2.Write(&b, nil); err != nil {
		t.Fatal(err)
	}
	pa, pb := pages(a.Bytes(), 4096), pages(b.Bytes(), 4096)
	delete(pa, sha256.Sum256(make([]byte, 4096)))
	common := 0
	for k := range pa {
		if pb[k] > 0 {
			common++
		}
	}
	mem, _ := spec(1).Count()
	if int64(common) != mem.Shared {
		t.Fatalf("%d pages in common, want the %d shared ones", common, mem.Shared)
	}
}

// The on-demand images read exactly what Write writes, at any offset and
// length, including reads that straddle pages or run past the end.
func TestImagesMatchWrite(t *testing.T) {
	s := Spec{Seed: 3, BaseSeed: 9, MemSize: 64 * 4096, DiskSize: 8 * 65536, PageSize: 4096, DiskBlock: 65536,
		ZeroFrac: 0.3, SharedFrac: 0.2, RepeatFrac: 0.1}
	var mem, disk bytes.Buffer
	if err := s.Write(&mem, &disk); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		want []byte
		im   io.ReaderAt
	}{{"memory", mem.Bytes(), s.Memory()}, {"disk", disk.Bytes(), s.Disk()}} {
		for _, r := range [][2]int{{0, len(c.want)}, {100, 5000}, {4095, 2}, {len(c.want) - 10, 10}, {70000, 65536 * 2}} {
			off, n := r[0], min(r[1], len(c.want)-r[0])
			got := make([]byte, n)
			if k, err := c.im.ReadAt(got, int64(off)); k != n || err != nil {
				t.Fatalf("%s ReadAt(%d, %d) = %d, %v", c.name, off, n, k, err)
			}
			if !bytes.Equal(got, c.want[off:off+n]) {
				t.Fatalf("%s bytes %d+%d differ from Write", c.name, off, n)
			}
		}
		tail := make([]byte, 20)
		if k, err := c.im.ReadAt(tail, int64(len(c.want)-10)); k != 10 || err != io.EOF {
			t.Fatalf("%s read past end = %d, %v; want 10, EOF", c.name, k, err)
		}
	}
}
