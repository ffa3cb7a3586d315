package fetch

import (
	"errors"
	"runtime"
	"testing"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/names"
	"github.com/sgrelay/sg/internal/seal"
	"github.com/sgrelay/sg/internal/wire"
)

func openOf(id byte, size uint64) wire.Open {
	return wire.Open{ID: wire.MigrationID{id}, VM: "web1", Regions: []wire.RegionInfo{{Name: "mem", Kind: 1, Size: size, ChunkSize: 4096}}}
}

// An Open beyond the positions cap, the per-source caps or the free room
// is refused before anything is allocated; others go on being admitted.
func TestIncomingAdmission(t *testing.T) {
	s := NewIncomings(nil)
	room := int64(64 << 20)
	s.SetAdmission(Admission{MaxPositions: 4096, PerSource: 2, PerSourceBytes: 12 << 20, Room: func() (int64, error) { return room, nil }})

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := s.Open("evil", openOf(1, 1<<42)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("open of 2^42 bytes: %v, want ErrTooLarge", err)
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("refusing a 2^42-byte open allocated %d bytes", got)
	}
	if _, err := s.Open("evil", openOf(2, 4097*4096)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("open of 4097 positions (cap 4096): %v, want ErrTooLarge", err)
	}
	bad := openOf(3, 4096)
	bad.VM = "../../../escaped"
	if _, err := s.Open("evil", bad); !errors.Is(err, names.ErrBadVM) {
		t.Fatalf("open of VM %q: %v, want ErrBadVM", bad.VM, err)
	}

	// Per source: two open, the third refused; the count and bytes are
	// the source's own.
	if _, err := s.Open("a", openOf(10, 8<<20)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open("a", openOf(11, 6<<20)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("14 MiB open from a source (cap 12 MiB): %v, want ErrTooLarge", err)
	}
	if _, err := s.Open("a", openOf(12, 4<<20)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open("a", openOf(13, 4096)); !errors.Is(err, ErrTooManyOpen) {
		t.Fatalf("third open from a source (cap 2): %v, want ErrTooManyOpen", err)
	}
	if _, err := s.Open("b", openOf(20, 8<<20)); err != nil {
		t.Fatalf("another source: %v", err)
	}
	// A migration handed over still gathers here: it counts against its
	// source until it is retired.
	if err := s.Finish("a", wire.MigrationID{10}, chunk.Sum([]byte("root")), false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open("a", openOf(14, 4096)); !errors.Is(err, ErrTooManyOpen) {
		t.Fatalf("open beside a handed-over migration (cap 2): %v, want ErrTooManyOpen", err)
	}
	s.Remove(wire.MigrationID{10})
	if _, err := s.Open("a", openOf(14, 4096)); err != nil {
		t.Fatalf("open after one was retired: %v", err)
	}
	// One its source gave up does not count.
	s.Abandon("a", wire.MigrationID{14}, errors.New("eviction failed"))
	if _, err := s.Open("a", openOf(15, 4096)); err != nil {
		t.Fatalf("open after one was abandoned: %v", err)
	}
	// Room: the migrations here (4 MiB + 8 MiB + 4 KiB) and the new one
	// must fit the free space.
	room = 16 << 20
	if _, err := s.Open("c", openOf(30, 4<<20)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("open beyond the free room: %v, want ErrTooLarge", err)
	}
	if _, err := s.Open("c", openOf(31, 2<<20)); err != nil {
		t.Fatalf("open within the free room: %v", err)
	}
}

// A gather the operator asked for (an existing manifest, or one resumed
// after a restart, whose files may already fill the disk) is held to the
// names and the positions cap, not to the free room or the source's caps.
func TestOperatorGatherAdmission(t *testing.T) {
	s := NewIncomings(nil)
	s.SetAdmission(Admission{MaxPositions: 4096, PerSource: 1, PerSourceBytes: 4096, Room: func() (int64, error) { return 0, nil }})
	region := func(size int64) manifest.Region {
		return manifest.Region{Name: "mem", Kind: manifest.KindMemory, Size: size, ChunkSize: 4096}
	}
	m := &Resolved{Manifest: &manifest.Manifest{Name: "web1", Regions: []manifest.Region{region(1 << 20)}}}
	if _, err := s.OpenFromManifest(chunk.Sum([]byte("a")), m, seal.Secret{}, []string{"p"}); err != nil {
		t.Fatalf("operator's gather of 1 MiB with no free room counted: %v", err)
	}
	m.Regions[0] = region(4097 * 4096)
	if _, err := s.OpenFromManifest(chunk.Sum([]byte("b")), m, seal.Secret{}, []string{"p"}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("operator's gather over the positions cap: %v, want ErrTooLarge", err)
	}
	m.Regions[0], m.Name = region(4096), "../../../escaped"
	if _, err := s.OpenFromManifest(chunk.Sum([]byte("c")), m, seal.Secret{}, []string{"p"}); !errors.Is(err, names.ErrBadVM) {
		t.Fatalf("operator's gather of a manifest named %q: %v, want ErrBadVM", m.Name, err)
	}
}

// Placed IDs are kept per page as placements arrive: an Open of a huge
// region costs a pointer per page, and reads and the dense form agree
// with what was placed.
func TestPlacedIDsSparse(t *testing.T) {
	p := newPlacedIDs(3*idPageLen + 5)
	a, b := chunk.Sum([]byte("a")), chunk.Sum([]byte("b"))
	p.set(0, a)
	p.set(3*idPageLen+4, b)
	if p.at(0) != a || p.at(3*idPageLen+4) != b || !p.at(idPageLen).IsZero() {
		t.Fatal("placed IDs read back wrong")
	}
	allocated := 0
	for _, pg := range p.pages {
		if pg != nil {
			allocated++
		}
	}
	if allocated != 2 {
		t.Fatalf("%d pages allocated for placements in 2", allocated)
	}
	d := p.dense()
	if uint64(len(d)) != p.len() || d[0] != a || d[len(d)-1] != b || !d[1].IsZero() {
		t.Fatalf("dense form: %d IDs", len(d))
	}

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s := NewIncomings(nil)
	s.SetAdmission(Admission{MaxPositions: 1 << 30, PerSourceBytes: 1 << 50})
	in, err := s.Open("a", openOf(1, 1<<40)) // 2^28 positions
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 8<<20 {
		t.Fatalf("an Open of 2^28 positions allocated %d bytes (dense: 8 GiB)", got)
	}
	if err := s.AddPlacements("a", in.ID, []wire.Placement{{Index: 1<<28 - 1, ID: a, Holders: 1}}); err != nil {
		t.Fatal(err)
	}
	if id, ok := in.At(0, 1<<28-1); !ok || id != a {
		t.Fatal("placement at the last position not recorded")
	}
}

// The gathers of every migration here hold state per position until they
// are retired, handed over or not: the node-wide cap counts them all,
// whatever their source, so many sources (or one that hands over at once
// and opens again) cannot hold more than the node can.
func TestIncomingAdmissionOpenPositions(t *testing.T) {
	s := NewIncomings(nil)
	s.SetAdmission(Admission{MaxPositions: 4096, PerSource: 16, PerSourceBytes: 1 << 40, MaxOpenPositions: 6000})
	if _, err := s.Open("a", openOf(1, 4000*4096)); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish("a", wire.MigrationID{1}, chunk.Sum([]byte("root")), false); err != nil {
		t.Fatal(err)
	}
	_, err := s.Open("b", openOf(2, 2001*4096))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("2001 positions beside 4000 handed over (node cap 6000): %v, want ErrTooLarge", err)
	}
	t.Log(err)
	if _, err := s.Open("b", openOf(3, 2000*4096)); err != nil {
		t.Fatalf("2000 positions beside 4000 (node cap 6000): %v", err)
	}
	// An abandoned migration's state goes at once: it no longer counts.
	s.Abandon("b", wire.MigrationID{3}, errors.New("eviction failed"))
	if _, err := s.Open("c", openOf(4, 2000*4096)); err != nil {
		t.Fatalf("open after an abandoned one: %v", err)
	}
	// A retired migration gives its positions back.
	s.Remove(wire.MigrationID{1})
	if _, err := s.Open("c", openOf(5, 4000*4096)); err != nil {
		t.Fatalf("open after one was retired: %v", err)
	}
}
