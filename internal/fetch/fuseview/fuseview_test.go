package fuseview

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// A process started once a view is mounted (a guest's QEMU) inherits no
// /dev/fuse descriptor: one would keep the view's connection alive after
// sgnode died, and every read of the view would wait for good.
func TestStartedProcessInheritsNoFUSEDescriptor(t *testing.T) {
	testenv.Need(t, "FUSE", Available())
	m, err := New(filepath.Join(t.TempDir(), "view"), []File{{Name: "mem", Size: 4096, Region: make(memRegion, 4096)}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmount()
	own := fuseDescriptors(t, "self")
	if len(own) == 0 {
		t.Fatal("the mount's /dev/fuse descriptor is not open in this process")
	}
	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	if got := fuseDescriptors(t, strconv.Itoa(child.Process.Pid)); len(got) > 0 {
		t.Fatalf("a started process inherited /dev/fuse as fd %v", got)
	}
}

// fuseDescriptors lists process pid's descriptors open on /dev/fuse.
func fuseDescriptors(t *testing.T, pid string) []string {
	t.Helper()
	dir := filepath.Join("/proc", pid, "fd")
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var fds []string
	for _, e := range es {
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && target == "/dev/fuse" {
			fds = append(fds, e.Name())
		}
	}
	return fds
}

// DetachUnder finds the views below a directory from mountinfo (escaped
// paths included, other file systems and the directory's neighbours left
// alone) and detaches them.
func TestDetachUnder(t *testing.T) {
	info := strings.Join([]string{
		`36 35 98:0 / /data/lazy/ab\040cd rw - fuse.sg sg rw`,
		`37 35 98:0 / /data/lazy/ef rw shared:1 - fuse sg rw`,
		`38 35 98:0 / /data/lazy-other/x rw - fuse.sg sg rw`,
		`39 35 98:0 / /data/lazy/tmp rw - tmpfs tmpfs rw`,
		`40 35 98:0 / /data/lazy rw - fuse.sg sg rw`,
		`garbage`,
	}, "\n")
	got, err := fuseMountsUnder(strings.NewReader(info), "/data/lazy")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/data/lazy/ab cd", "/data/lazy/ef"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q, want %q", got, want)
	}

	testenv.Need(t, "FUSE", Available())
	lazy := filepath.Join(t.TempDir(), "lazy")
	m, err := New(filepath.Join(lazy, "view"), []File{{Name: "mem", Size: 4096, Region: make(memRegion, 4096)}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmount()
	detached, err := DetachUnder(lazy)
	if err != nil || len(detached) != 1 || detached[0] != m.Dir {
		t.Fatalf("DetachUnder(%s) = %q, %v; want [%s]", lazy, detached, err, m.Dir)
	}
	if again, err := DetachUnder(lazy); err != nil || len(again) != 0 {
		t.Fatalf("after the detach: %q, %v; want nothing mounted", again, err)
	}
}
