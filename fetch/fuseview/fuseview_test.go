package fuseview

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

type zeroRegion struct{}

func (zeroRegion) ReadAt(_ context.Context, p []byte, _ int64) (int, error) {
	clear(p)
	return len(p), nil
}
func (zeroRegion) WriteAt(_ context.Context, p []byte, _ int64) (int, error) { return len(p), nil }

// The mount counts the handles processes hold on its files, descriptors
// and mappings alike, so its owner knows when nothing uses the view.
func TestOpenHandlesCountsDescriptorsAndMappings(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	dir := filepath.Join(t.TempDir(), "view")
	m, err := New(dir, []File{{Name: "mem", Size: 1 << 20, Region: zeroRegion{}}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmount()
	wait := func(want int64) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); m.OpenHandles() != want; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("OpenHandles = %d, want %d", m.OpenHandles(), want)
			}
		}
	}
	wait(0)
	f1, err := os.Open(filepath.Join(dir, "mem"))
	if err != nil {
		t.Fatal(err)
	}
	f2, err := os.Open(filepath.Join(dir, "mem"))
	if err != nil {
		t.Fatal(err)
	}
	wait(2)
	f1.Close()
	wait(1)
	// A mapping outlives its descriptor: the handle is released with it.
	mapped, err := syscall.Mmap(int(f2.Fd()), 0, 4096, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	f2.Close()
	time.Sleep(100 * time.Millisecond)
	wait(1)
	syscall.Munmap(mapped)
	wait(0)
}
