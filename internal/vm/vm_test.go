package vm

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, dir, name string, size int) string {
	t.Helper()
	p := filepath.Join(dir, name)
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFilesSpecChecks(t *testing.T) {
	dir := t.TempDir()
	mem := writeFile(t, dir, "mem", 8192)
	disk := writeFile(t, dir, "disk", 10000)
	odd := writeFile(t, dir, "odd", 5000)
	empty := writeFile(t, dir, "empty", 0)
	cases := []struct {
		name  string
		mem   []string
		disks []string
		ok    bool
	}{
		{"good", []string{mem}, []string{disk}, true},
		{"missing memory", []string{filepath.Join(dir, "nope")}, nil, false},
		{"no memory", nil, []string{disk}, false},
		{"memory not whole pages", []string{odd}, nil, false},
		{"empty disk", []string{mem}, []string{empty}, false},
		{"directory", []string{dir}, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewFilesSpec("web1", tc.mem, tc.disks, "")
			if tc.ok != (err == nil) {
				t.Fatalf("err = %v", err)
			}
			if err != nil && !errors.Is(err, ErrBadImage) {
				t.Fatalf("err = %v, want ErrBadImage", err)
			}
		})
	}
	if _, err := NewFilesSpec("bad name!", []string{mem}, nil, ""); !errors.Is(err, ErrBadName) {
		t.Fatalf("bad name accepted: %v", err)
	}
}

func TestPauseRefusesChangedImage(t *testing.T) {
	dir := t.TempDir()
	mem := writeFile(t, dir, "mem", 8192)
	s, err := NewFilesSpec("web1", []string{mem}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	d := &Files{Spec: s}
	snap, err := d.Pause(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	snap.Close()
	if err := os.Truncate(mem, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pause(t.Context()); !errors.Is(err, ErrBadImage) {
		t.Fatalf("Pause of a truncated image: %v, want ErrBadImage", err)
	}
	os.Remove(mem)
	if _, err := d.Pause(t.Context()); !errors.Is(err, ErrBadImage) {
		t.Fatalf("Pause of a missing image: %v", err)
	}
}

func TestRegistryPersists(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vms.json")
	r, err := OpenRegistry(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewFilesSpec("web1", []string{writeFile(t, dir, "mem", 4096)}, nil, writeFile(t, dir, "st", 100))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Add(s); err != nil {
		t.Fatal(err)
	}
	if err := r.Add(s); !errors.Is(err, ErrExists) {
		t.Fatalf("double add: %v", err)
	}
	r2, err := OpenRegistry(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := r2.Get("web1")
	if err != nil || len(got.Regions) != 2 || got.Regions[1].Name != "state" {
		t.Fatalf("reloaded %+v, %v", got, err)
	}
	if err := r2.Remove("web1"); err != nil {
		t.Fatal(err)
	}
	if err := r2.Remove("web1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("double remove: %v", err)
	}
}

// A snapshot notices an image written (same size, new mtime) or truncated
// while it was open.
func TestSnapshotUnchanged(t *testing.T) {
	dir := t.TempDir()
	mem := writeFile(t, dir, "mem", 8192)
	disk := writeFile(t, dir, "disk", 65536)
	spec, err := NewFilesSpec("web1", []string{mem}, []string{disk}, "")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := (&Files{Spec: spec}).Pause(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	if err := snap.Unchanged(); err != nil {
		t.Fatalf("untouched images: %v", err)
	}
	later := time.Now().Add(time.Second)
	if err := os.Chtimes(disk, later, later); err != nil { // a write of the same size
		t.Fatal(err)
	}
	if err := snap.Unchanged(); err == nil || !strings.Contains(err.Error(), "disk0") {
		t.Fatalf("rewritten disk: %v", err)
	}
	if err := os.Chtimes(disk, later, snap.stamps[1].mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(mem, 4096); err != nil {
		t.Fatal(err)
	}
	if err := snap.Unchanged(); err == nil || !strings.Contains(err.Error(), "mem") {
		t.Fatalf("truncated memory: %v", err)
	}
}
