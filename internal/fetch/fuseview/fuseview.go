// Package fuseview exposes a VM's regions as files on a FUSE mount, so a
// hypervisor can start the VM at the destination before its state has
// arrived: every read goes through the gather's ReadAt (blocking only for
// chunks not yet here, which it demand-fetches ahead of all else), and
// every write goes to the local copy, never to the network.
//
// The files accept read-write opens, the kernel's 128 KiB read-ahead,
// QEMU's 2 MiB windows, and mmap with MAP_PRIVATE or MAP_SHARED (the page
// cache is kept: once read, a page is served by the kernel).
package fuseview

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Region is one file's backing: the gather's demand path.
type Region interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	WriteAt(ctx context.Context, p []byte, off int64) (int, error)
}

// File describes one file of the mount.
type File struct {
	Name   string
	Size   int64
	Region Region
	// UID and GID own the file (mode 0600): the kernel lets only them (and
	// root) open it. Default: root.
	UID, GID uint32
}

// Available reports why FUSE cannot be used here, or nil.
func Available() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("no /dev/fuse: %w", err)
	}
	if os.Geteuid() != 0 {
		return errors.New("mounting needs root")
	}
	return nil
}

type root struct {
	fs.Inode
	files []File
	open  *atomic.Int64 // handles open on any file of the mount
}

var _ fs.NodeOnAdder = (*root)(nil)

func (r *root) OnAdd(ctx context.Context) {
	for _, f := range r.files {
		ch := r.NewPersistentInode(ctx, &regionFile{f: f, open: r.open}, fs.StableAttr{Mode: syscall.S_IFREG})
		r.AddChild(f.Name, ch, false)
	}
}

type regionFile struct {
	fs.Inode
	f    File
	open *atomic.Int64
}

var (
	_ fs.NodeGetattrer = (*regionFile)(nil)
	_ fs.NodeSetattrer = (*regionFile)(nil)
	_ fs.NodeOpener    = (*regionFile)(nil)
	_ fs.NodeReader    = (*regionFile)(nil)
	_ fs.NodeWriter    = (*regionFile)(nil)
	_ fs.NodeFsyncer   = (*regionFile)(nil)
	_ fs.NodeFlusher   = (*regionFile)(nil)
	_ fs.NodeReleaser  = (*regionFile)(nil)
)

func (r *regionFile) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = 0o600 | syscall.S_IFREG
	out.Owner = fuse.Owner{Uid: r.f.UID, Gid: r.f.GID}
	out.Size = uint64(r.f.Size)
	out.Blksize = 4096
	out.Blocks = (uint64(r.f.Size) + 511) / 512
	return 0
}

// Setattr allows only what changes nothing (QEMU may "truncate" to the
// same size): a region's size is the VM's.
func (r *regionFile) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && int64(sz) != r.f.Size {
		return syscall.EPERM
	}
	return r.Getattr(ctx, fh, out)
}

// Open counts the handle: the kernel releases it only when the last
// descriptor and the last mapping of the file are gone, so the count says
// whether anything still uses the view.
func (r *regionFile) Open(context.Context, uint32) (fs.FileHandle, uint32, syscall.Errno) {
	r.open.Add(1)
	// A handle, though I/O goes through the node: without one the kernel's
	// release is never passed on.
	return &handle{}, fuse.FOPEN_KEEP_CACHE, 0
}

// handle is an open file of the view; the node serves its I/O.
type handle struct{}

func (r *regionFile) Release(context.Context, fs.FileHandle) syscall.Errno {
	r.open.Add(-1)
	return 0
}

func (r *regionFile) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= r.f.Size {
		return fuse.ReadResultData(nil), 0
	}
	n, err := r.f.Region.ReadAt(ctx, dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (r *regionFile) Write(ctx context.Context, _ fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if off+int64(len(data)) > r.f.Size {
		return 0, syscall.EFBIG
	}
	n, err := r.f.Region.WriteAt(ctx, data, off)
	if err != nil {
		return uint32(n), syscall.EIO
	}
	return uint32(n), 0
}

func (r *regionFile) Fsync(context.Context, fs.FileHandle, uint32) syscall.Errno { return 0 }
func (r *regionFile) Flush(context.Context, fs.FileHandle) syscall.Errno         { return 0 }

// Mount serves files under dir until Unmount.
type Mount struct {
	Dir    string
	server *fuse.Server
	open   *atomic.Int64
	done   chan struct{} // closed when the server has ended
}

// OpenHandles is how many handles processes hold on the mount's files
// (a descriptor or a mapping each); 0 means nothing uses the view.
func (m *Mount) OpenHandles() int64 { return m.open.Load() }

// New mounts files at dir (created if needed).
func New(dir string, files []File) (*Mount, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	open := new(atomic.Int64)
	srv, err := mountNoInherit(dir, &root{files: files, open: open}, &fs.Options{
		MountOptions: fuse.MountOptions{
			// allow_other lets the hypervisor (maybe not root) in;
			// default_permissions makes the kernel check each file's
			// owner and mode, so no other local user reads a guest.
			FsName: "sg", Name: "sg", DirectMountStrict: true, AllowOther: true,
			Options:      []string{"default_permissions"},
			MaxReadAhead: 128 << 10, MaxWrite: 1 << 20,
			// Reads are answered from memory, never from a file
			// descriptor: splicing only fails (and logs) on large reads.
			DisableSplice: true,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	m := &Mount{Dir: dir, server: srv, open: open, done: make(chan struct{})}
	go func() { // owned by m: it ends with the server
		srv.Wait()
		close(m.done)
	}()
	return m, nil
}

// mountNoInherit mounts like fs.Mount, so that no process started later
// inherits the mount's /dev/fuse descriptor: go-fuse opens it without
// close-on-exec, and a hypervisor holding it would keep the connection
// alive after sgnode died, so that every read of the view (the guest's, a
// restarted sgnode's) waited for good instead of failing. Holding
// syscall.ForkLock for reading keeps any fork out from the open to the
// flag being set; the mount is direct (root) so it forks no fusermount.
func mountNoInherit(dir string, r *root, opts *fs.Options) (*fuse.Server, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	srv, err := fs.Mount(dir, r, opts)
	if err != nil {
		return nil, err
	}
	if err := closeOnExecAll(); err != nil {
		_ = srv.Unmount()
		return nil, fmt.Errorf("mark descriptors close-on-exec: %w", err)
	}
	return srv, nil
}

// closeOnExecAll sets close-on-exec on every descriptor of the process
// above stderr. Go opens its own descriptors with it, and os/exec hands a
// child only what it names (ExtraFiles), so nothing that should be
// inherited loses by it.
func closeOnExecAll() error {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range es {
		var fd int
		if _, err := fmt.Sscan(e.Name(), &fd); err != nil || fd <= 2 {
			continue
		}
		// The directory's own descriptor is in the list and closed by
		// now: EBADF is expected for it.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && !errors.Is(err, unix.EBADF) {
			return fmt.Errorf("fd %d: %w", fd, err)
		}
	}
	return nil
}

// Unmount stops serving (lazily if files are still open: their readers
// then get errors) and removes the empty mount point.
func (m *Mount) Unmount() error {
	if err := m.server.Unmount(); err != nil {
		_ = syscall.Unmount(m.Dir, syscall.MNT_DETACH)
	}
	<-m.done
	_ = os.Remove(m.Dir)
	return nil
}

// Abort tears the mount down even while files are open: it aborts the
// FUSE connection where the fusectl file system is mounted (their users
// get ENOTCONN) and detaches the mount, so a failed migration's view
// never waits on a process that holds it. It does not wait for the
// server to end: call Wait for that (it returns once the last handle is
// gone).
func (m *Mount) Abort() {
	var st syscall.Stat_t
	if err := syscall.Stat(m.Dir, &st); err == nil {
		minor := (st.Dev & 0xff) | ((st.Dev >> 12) & 0xfff00)
		_ = os.WriteFile(fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", minor), []byte("1"), 0)
	}
	if err := m.server.Unmount(); err != nil {
		_ = syscall.Unmount(m.Dir, syscall.MNT_DETACH)
	}
	_ = os.Remove(m.Dir)
}

// Wait waits for the server to end after Abort or Unmount.
func (m *Mount) Wait() { <-m.done }

// Done is closed when the server has ended, so that a caller can stop
// waiting for a process that keeps an aborted view's file open.
func (m *Mount) Done() <-chan struct{} { return m.done }
