package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/vm"
)

// Region names of a QEMU eviction besides mem* and disk*.
const (
	ConfigRegion = "qemu"   // the guest config (Config as JSON)
	StateRegion  = "state"  // the device state
	KernelRegion = "kernel" // -kernel
	InitrdRegion = "initrd" // -initrd
)

// maxConfigSize bounds the guest config a destination will read.
const maxConfigSize = 1 << 20

// Config is what the destination needs besides the regions: the guest's
// description (never a command line) and when the source paused
// (downtime is measured from it, so it assumes the hosts' clocks agree,
// as NTP keeps them).
type Config struct {
	VM       string      `json:"vm"`
	Guest    Description `json:"guest"`
	PausedAt time.Time   `json:"paused_at"`
}

// Timeouts of the QMP steps.
const (
	qmpTimeout     = 10 * time.Second
	saveTimeout    = 2 * time.Minute
	quitTimeout    = 30 * time.Second
	migratePollGap = 10 * time.Millisecond
)

// Inspect reads a running guest's command line through its QMP socket and
// returns a spec for the registry; it checks that the driver can move it.
func Inspect(ctx context.Context, name, qmpPath string) (vm.Spec, error) {
	if err := vm.CheckName(name); err != nil {
		return vm.Spec{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, qmpTimeout)
	defer cancel()
	q, err := DialQMP(ctx, qmpPath)
	if err != nil {
		return vm.Spec{}, err
	}
	defer q.Close()
	argv, err := commandLine(q.PID())
	if err != nil {
		return vm.Spec{}, err
	}
	m, err := ParseArgs(argv)
	if err != nil {
		return vm.Spec{}, fmt.Errorf("VM %s: %w", name, err)
	}
	regions, err := m.regions()
	if err != nil {
		return vm.Spec{}, fmt.Errorf("VM %s: %w", name, err)
	}
	return vm.Spec{Name: name, Driver: "qemu", Regions: regions, QEMU: &vm.QEMU{QMP: qmpPath, Args: argv}}, nil
}

// commandLine reads /proc/<pid>/cmdline.
func commandLine(pid int) ([]string, error) {
	if pid <= 0 {
		return nil, errors.New("cannot tell which process serves the QMP socket")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, fmt.Errorf("QEMU command line: %w", err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00"), nil
}

// regions lists the host files of m as eviction regions, checked: memory
// files as large as their backend, every file readable.
func (m *Machine) regions() ([]vm.Region, error) {
	var out []vm.Region
	add := func(name string, kind manifest.Kind, path string) error {
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("%s: %w: %w", name, vm.ErrBadImage, err)
		}
		if !fi.Mode().IsRegular() || fi.Size() == 0 {
			return fmt.Errorf("%s: %w: %s is not a non-empty regular file", name, vm.ErrBadImage, path)
		}
		out = append(out, vm.Region{Name: name, Kind: kind, Path: path, Size: fi.Size()})
		return nil
	}
	for _, mem := range m.Memory {
		if err := add(mem.Region, manifest.KindMemory, mem.Path); err != nil {
			return nil, err
		}
		if r := out[len(out)-1]; r.Size < mem.Size || r.Size%vm.MemoryChunkSize != 0 {
			return nil, fmt.Errorf("%s: %w: %s is %d bytes for a %d-byte backend", mem.Region, vm.ErrBadImage, mem.Path, r.Size, mem.Size)
		}
	}
	for _, d := range m.Drives {
		if err := add(d.Region, manifest.KindDisk, d.Path); err != nil {
			return nil, err
		}
	}
	if m.Kernel != "" {
		if err := add(KernelRegion, manifest.KindFile, m.Kernel); err != nil {
			return nil, err
		}
	}
	if m.Initrd != "" {
		if err := add(InitrdRegion, manifest.KindFile, m.Initrd); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Driver evicts one running QEMU guest.
type Driver struct {
	Spec     vm.Spec
	StateDir string // where the device state and guest config are written
	Log      *slog.Logger

	qmp   *QMP
	pid   int
	files []string // written by Pause, removed at the end
}

// NewDriver returns the driver of a registered guest.
func NewDriver(s vm.Spec, stateDir string, log *slog.Logger) (*Driver, error) {
	if s.QEMU == nil {
		return nil, fmt.Errorf("VM %s is not a QEMU guest", s.Name)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{Spec: s, StateDir: stateDir, Log: log}, nil
}

// Pause stops the guest, saves its device state (RAM stays in its shared
// memory file) and opens every region. The small regions come first: the
// destination needs them before it can resume. On error the guest runs
// again.
func (d *Driver) Pause(ctx context.Context) (_ *vm.Snapshot, err error) {
	name := d.Spec.Name
	qctx, cancel := context.WithTimeout(ctx, qmpTimeout)
	defer cancel()
	q, err := DialQMP(qctx, d.Spec.QEMU.QMP)
	if err != nil {
		return nil, fmt.Errorf("VM %s: %w", name, err)
	}
	argv, err := commandLine(q.PID())
	var m *Machine
	if err == nil {
		m, err = ParseArgs(argv)
	}
	if err != nil {
		q.Close()
		return nil, fmt.Errorf("VM %s: %w", name, err)
	}
	status, err := q.Status(qctx)
	if err != nil {
		q.Close()
		return nil, fmt.Errorf("VM %s: %w", name, err)
	}
	if status != "running" && status != "paused" {
		q.Close()
		return nil, fmt.Errorf("VM %s: guest is %q, not running or paused", name, status)
	}
	d.qmp, d.pid = q, q.PID()
	if err := q.Execute(qctx, "stop", nil, nil); err != nil {
		d.closeQMP()
		return nil, fmt.Errorf("VM %s: %w", name, err)
	}
	pausedAt := time.Now()
	defer func() {
		if err != nil {
			d.undo(status)
		}
	}()
	if err := os.MkdirAll(d.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("VM %s: state directory: %w", name, err)
	}
	statePath := filepath.Join(d.StateDir, name+".state")
	configPath := filepath.Join(d.StateDir, name+".qemu.json")
	d.files = []string{statePath, configPath}
	_ = os.Remove(statePath)
	if err := q.saveState(ctx, statePath); err != nil {
		return nil, fmt.Errorf("VM %s: save device state: %w", name, err)
	}
	cfg, err := json.MarshalIndent(Config{VM: name, Guest: m.Guest, PausedAt: pausedAt}, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(configPath, cfg, 0o600); err != nil {
		return nil, fmt.Errorf("VM %s: guest config: %w", name, err)
	}
	files, err := m.regions()
	if err != nil {
		return nil, fmt.Errorf("VM %s: %w", name, err)
	}
	regions := []vm.Region{
		{Name: ConfigRegion, Kind: manifest.KindFile, Path: configPath},
		{Name: StateRegion, Kind: manifest.KindState, Path: statePath},
	}
	for _, r := range files { // kernel and initrd before memory and disks
		if r.Kind == manifest.KindFile {
			regions = append(regions, r)
		}
	}
	for _, r := range files {
		if r.Kind != manifest.KindFile {
			regions = append(regions, r)
		}
	}
	snap := &vm.Snapshot{VM: name}
	for _, r := range regions {
		f, err := os.Open(r.Path)
		if err == nil {
			if err = snap.AddFile(r, f); err != nil {
				f.Close()
			} else if snap.Regions[len(snap.Regions)-1].Size == 0 {
				err = errors.New("empty") // the snapshot closes f
			}
		}
		if err != nil {
			snap.Close()
			return nil, fmt.Errorf("VM %s: %s: %w: %w", name, r.Name, vm.ErrBadImage, err)
		}
	}
	d.Log.Info("QEMU guest paused and its device state saved", "vm", name, "pid", d.pid,
		"state_bytes", snap.Regions[1].Size, "took", time.Since(pausedAt))
	return snap, nil
}

// undo lets the guest run again after a failed pause.
func (d *Driver) undo(status string) {
	ctx, cancel := context.WithTimeout(context.Background(), qmpTimeout)
	defer cancel()
	if status == "running" {
		if err := d.qmp.Execute(ctx, "cont", nil, nil); err != nil {
			d.Log.Error("QEMU guest could not be continued after a failed pause", "vm", d.Spec.Name, "err", err)
		}
	}
	d.cleanup()
}

// Resume continues the guest at the source after a failed eviction.
func (d *Driver) Resume(ctx context.Context) error {
	if d.qmp == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, qmpTimeout)
	defer cancel()
	err := d.qmp.Execute(ctx, "cont", nil, nil)
	d.cleanup()
	if err != nil {
		return fmt.Errorf("VM %s: continue at the source: %w", d.Spec.Name, err)
	}
	d.Log.Info("QEMU guest continues at the source", "vm", d.Spec.Name)
	return nil
}

// Release quits the source's QEMU once the eviction time is reached and
// waits for the process to go. Its memory and disk files stay for the
// operator to delete.
func (d *Driver) Release(ctx context.Context) error {
	if d.qmp == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, quitTimeout)
	defer cancel()
	err := d.qmp.Execute(ctx, "quit", nil, nil)
	var qe *QMPError
	if errors.As(err, &qe) {
		d.cleanup()
		return fmt.Errorf("VM %s: quit: %w", d.Spec.Name, err)
	}
	// QEMU may close the socket before or after answering: wait for the
	// process itself.
	for d.pid > 0 && syscall.Kill(d.pid, 0) == nil && !isZombie(d.pid) {
		select {
		case <-ctx.Done():
			d.cleanup()
			return fmt.Errorf("VM %s: QEMU (pid %d) still running after quit: %w", d.Spec.Name, d.pid, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	d.cleanup()
	d.Log.Info("source QEMU quit", "vm", d.Spec.Name, "pid", d.pid)
	return nil
}

// isZombie reports an exited process not yet reaped by its parent.
func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] == 'Z'
	}
	return false
}

func (d *Driver) cleanup() {
	for _, f := range d.files {
		_ = os.Remove(f)
	}
	d.files = nil
	d.closeQMP()
}

func (d *Driver) closeQMP() {
	if d.qmp != nil {
		d.qmp.Close()
		d.qmp = nil
	}
}
