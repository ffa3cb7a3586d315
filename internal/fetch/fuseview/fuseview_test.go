package fuseview

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sgrelay/sg/internal/testenv"
)

type memRegion []byte

func (m memRegion) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	return copy(p, m[off:]), nil
}
func (m memRegion) WriteAt(_ context.Context, p []byte, off int64) (int, error) {
	return copy(m[off:], p), nil
}

const nobody = 65534

// A local user other than a view file's owner cannot read it, though the
// mount admits other users (for an unprivileged hypervisor): the kernel
// checks the file's owner and mode. The owner it names reads it.
func TestHostileLocalUserCannotReadView(t *testing.T) {
	testenv.Need(t, "FUSE", Available())
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for p := filepath.Dir(dir); p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	guest := bytes.Repeat([]byte("secret page "), 1024)
	m, err := New(filepath.Join(dir, "view"), []File{
		{Name: "ram.img", Size: int64(len(guest)), Region: memRegion(guest)},
		{Name: "theirs.img", Size: int64(len(guest)), Region: memRegion(guest), UID: nobody, GID: nobody},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Unmount() })
	readAs := func(name string) (string, error) {
		cmd := exec.Command("head", "-c", "11", filepath.Join(m.Dir, name))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := readAs("ram.img"); err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("another user read root's view file: %q, %v", out, err)
	}
	if out, err := readAs("theirs.img"); err != nil || out != "secret page" {
		t.Fatalf("the file's owner could not read it: %q, %v", out, err)
	}
}

type zeroRegion struct{}

func (zeroRegion) ReadAt(_ context.Context, p []byte, _ int64) (int, error) {
	clear(p)
	return len(p), nil
}
func (zeroRegion) WriteAt(_ context.Context, p []byte, _ int64) (int, error) { return len(p), nil }

// The mount counts the handles processes hold on its files, descriptors
// and mappings alike, so its owner knows when nothing uses the view.
func TestOpenHandlesCountsDescriptorsAndMappings(t *testing.T) {
	testenv.Need(t, "FUSE", Available())
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

// After Abort, the server ends once the last handle is gone (at once
// where the FUSE connection can be aborted): Done says when, so that a
// caller can wait for it and for other things together.
func TestAbortedViewDoneOnceHandlesGo(t *testing.T) {
	testenv.Need(t, "FUSE", Available())
	dir := filepath.Join(t.TempDir(), "view")
	m, err := New(dir, []File{{Name: "mem", Size: 1 << 20, Region: zeroRegion{}}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "mem"))
	if err != nil {
		t.Fatal(err)
	}
	m.Abort()
	f.Close()
	select {
	case <-m.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the aborted view's server did not end after its last handle went")
	}
	m.Wait() // returns at once now
}
