package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/names"
)

// Chunk sizes by region kind.
const (
	MemoryChunkSize  = 4 << 10  // one page
	DefaultDiskChunk = 64 << 10 // a disk block
	StateChunkSize   = 64 << 10
)

// Region is one linear piece of a VM's state.
type Region struct {
	Name string        `json:"name"` // "mem", "mem1", "disk0", "state"
	Kind manifest.Kind `json:"kind"`
	Path string        `json:"path"`
	Size int64         `json:"size"`
}

// Open region readers; Close them when done.
type RegionReader struct {
	Region
	io.ReaderAt
	io.Closer
}

// Snapshot is a paused VM's state, readable until Close.
type Snapshot struct {
	VM      string
	Regions []RegionReader
	stamps  []stamp // per region, when it was opened
}

// stamp is what tells a file changed: its size and modification time.
type stamp struct {
	size  int64
	mtime time.Time
}

// AddFile adds an open file as region r (its size taken from the file);
// the snapshot closes it.
func (s *Snapshot) AddFile(r Region, f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	r.Size = fi.Size()
	s.Regions = append(s.Regions, RegionReader{Region: r, ReaderAt: f, Closer: f})
	s.stamps = append(s.stamps, stamp{fi.Size(), fi.ModTime()})
	return nil
}

// Unchanged reports an error if a region's file changed size or was
// written since it was added: the bytes read from it may not belong
// together.
func (s *Snapshot) Unchanged() error {
	for i, r := range s.Regions {
		f, ok := r.ReaderAt.(*os.File)
		if !ok || i >= len(s.stamps) {
			continue
		}
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("%s: %w", r.Path, err)
		}
		if was := s.stamps[i]; fi.Size() != was.size || !fi.ModTime().Equal(was.mtime) {
			return fmt.Errorf("%s (%s) changed while it was read: %d bytes modified %s, was %d bytes modified %s",
				r.Name, r.Path, fi.Size(), fi.ModTime().Format(time.RFC3339Nano), was.size, was.mtime.Format(time.RFC3339Nano))
		}
	}
	return nil
}

// Close closes every region.
func (s *Snapshot) Close() error {
	var errs []error
	for _, r := range s.Regions {
		errs = append(errs, r.Close())
	}
	return errors.Join(errs...)
}

// Driver pauses, reads and releases one VM.
type Driver interface {
	// Pause stops the VM changing its state and opens its regions.
	Pause(ctx context.Context) (*Snapshot, error)
	// Resume undoes Pause after a failed eviction.
	Resume(ctx context.Context) error
	// Release frees the source after a successful eviction.
	Release(ctx context.Context) error
}

// Errors.
var (
	ErrNotFound = errors.New("no such VM")
	ErrExists   = errors.New("VM already registered")
	ErrBadImage = errors.New("bad VM image")
	// ErrNoMemory is a VM given no memory image (one of ErrBadImage).
	ErrNoMemory = fmt.Errorf("%w: at least one memory image is required", ErrBadImage)
	ErrBadName  = names.ErrBadVM
)

// Spec is a registered VM.
type Spec struct {
	Name string `json:"name"`
	// Driver is "files" (or empty) for images on disk, "qemu" for a
	// running QEMU guest.
	Driver string `json:"driver,omitempty"`
	// Regions are the images as registered; the qemu driver reads them
	// afresh from the guest's command line when it pauses it.
	Regions []Region `json:"regions"`
	QEMU    *QEMU    `json:"qemu,omitempty"`
}

// QEMU is how the qemu driver reaches a guest.
type QEMU struct {
	QMP  string   `json:"qmp"`  // the guest's QMP unix socket
	Args []string `json:"args"` // its command line when registered
}

// CheckName refuses a VM name that is empty, too long, "." or "..", or
// not made of letters, digits, '-', '_' and '.' (names.CheckVM: peers'
// Open frames and manifests are held to the same rule).
func CheckName(name string) error { return checkName(name) }

// NewFilesSpec builds and checks a spec from image paths: every file must
// exist and be readable; a memory image must be a whole number of pages.
func NewFilesSpec(name string, mem, disks []string, state string) (Spec, error) {
	if err := checkName(name); err != nil {
		return Spec{}, err
	}
	if len(mem) == 0 {
		return Spec{}, fmt.Errorf("VM %s: %w", name, ErrNoMemory)
	}
	s := Spec{Name: name}
	add := func(rname string, kind manifest.Kind, path string) error {
		size, err := checkImage(path)
		if err != nil {
			return fmt.Errorf("VM %s: %s image %s: %w", name, kind, path, err)
		}
		if kind == manifest.KindMemory && size%MemoryChunkSize != 0 {
			return fmt.Errorf("VM %s: memory image %s is %d bytes, not a whole number of 4 KiB pages (truncated?): %w", name, path, size, ErrBadImage)
		}
		s.Regions = append(s.Regions, Region{Name: rname, Kind: kind, Path: path, Size: size})
		return nil
	}
	for i, p := range mem {
		if err := add(indexed("mem", i, len(mem)), manifest.KindMemory, p); err != nil {
			return Spec{}, err
		}
	}
	for i, p := range disks {
		if err := add(fmt.Sprintf("disk%d", i), manifest.KindDisk, p); err != nil {
			return Spec{}, err
		}
	}
	if state != "" {
		if err := add("state", manifest.KindState, state); err != nil {
			return Spec{}, err
		}
	}
	return s, nil
}

func indexed(base string, i, n int) string {
	if n == 1 {
		return base
	}
	return fmt.Sprintf("%s%d", base, i)
}

func checkName(name string) error { return names.CheckVM(name) }

// checkImage opens path for reading and returns its size.
func checkImage(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrBadImage, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrBadImage, err)
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("%w: not a regular file", ErrBadImage)
	}
	if fi.Size() == 0 {
		return 0, fmt.Errorf("%w: empty", ErrBadImage)
	}
	var b [1]byte
	if _, err := f.ReadAt(b[:], 0); err != nil {
		return 0, fmt.Errorf("%w: unreadable: %w", ErrBadImage, err)
	}
	return fi.Size(), nil
}

// Files is the driver for a snapshot already on disk. Pausing is a no-op
// (nothing runs), and so are Resume and Release: the files stay where they
// are for the operator to delete once the eviction is reported.
type Files struct{ Spec Spec }

// Pause opens every region, refusing images that changed since they were
// registered.
func (f *Files) Pause(ctx context.Context) (*Snapshot, error) {
	snap := &Snapshot{VM: f.Spec.Name}
	for _, r := range f.Spec.Regions {
		file, err := os.Open(r.Path)
		if err != nil {
			snap.Close()
			return nil, fmt.Errorf("VM %s: %s: %w: %w", f.Spec.Name, r.Name, ErrBadImage, err)
		}
		fi, err := file.Stat()
		if err == nil && fi.Size() != r.Size {
			err = fmt.Errorf("image %s is %d bytes, was %d when registered (truncated or changed)", r.Path, fi.Size(), r.Size)
		}
		if err == nil {
			err = snap.AddFile(r, file)
		}
		if err != nil {
			file.Close()
			snap.Close()
			return nil, fmt.Errorf("VM %s: %s: %w: %w", f.Spec.Name, r.Name, ErrBadImage, err)
		}
	}
	return snap, nil
}

func (f *Files) Resume(context.Context) error  { return nil }
func (f *Files) Release(context.Context) error { return nil }
