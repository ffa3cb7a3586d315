package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/vm/qemu"
	"github.com/sgrelay/sg/internal/wire"
	"golang.org/x/sync/errgroup"
)

// resumeTimeout bounds starting a guest: QEMU start, device state load.
const resumeTimeout = 3 * time.Minute

// guests are the QEMU guests resumed on this node, by migration.
type guests struct {
	host    qemu.Host // binary, user, sandbox (its probes cached)
	setHost sync.Once
	mu      sync.Mutex
	m       map[wire.MigrationID]*guestState
	noStart map[wire.MigrationID]bool // gathers resumed after a restart
}

func (gs *guests) skipStart(id wire.MigrationID) bool {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	return gs.noStart[id]
}

type guestState struct {
	rep      api.GuestReport
	guest    *qemu.Guest // running, once resumed
	cfg      qemu.Config
	settling bool
}

func (gs *guests) noStartFor(id wire.MigrationID) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if gs.noStart == nil {
		gs.noStart = map[wire.MigrationID]bool{}
	}
	gs.noStart[id] = true
}

func (gs *guests) set(id wire.MigrationID, update func(*guestState)) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if gs.m[id] == nil {
		gs.m[id] = &guestState{rep: api.GuestReport{Driver: "qemu"}}
	}
	update(gs.m[id])
}

func (gs *guests) get(id wire.MigrationID) *api.GuestReport {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if s := gs.m[id]; s != nil {
		c := s.rep
		return &c
	}
	return nil
}

// takeToSettle returns a guest running on the views, once: the gather's
// end and the guest's start race to settle it.
func (gs *guests) takeToSettle(id wire.MigrationID) (*qemu.Guest, qemu.Config) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if s := gs.m[id]; s != nil && s.guest != nil && !s.settling {
		s.settling = true
		return s.guest, s.cfg
	}
	return nil, qemu.Config{}
}

// maybeResumeGuest starts a QEMU guest arriving in `in` (it has a guest
// config region) on the lazy views, in a goroutine the daemon owns. The
// views must be up: call after mountLazy and exportDisks.
func (d *Daemon) maybeResumeGuest(in *fetch.Incoming, g *fetch.Gatherer) {
	cfgRegion := -1
	for i, r := range in.Regions {
		if r.Name == qemu.ConfigRegion {
			cfgRegion = i
		}
	}
	if cfgRegion < 0 {
		return
	}
	if d.guests.skipStart(in.ID) {
		d.log.Warn("QEMU guest of a gather resumed after a restart: not starting it (it ran here before; restart it from the views if you will)",
			"vm", in.VM, "lazy", d.lazyDir(in.ID.String()))
		return
	}
	if !d.cfg.QEMU.Resume {
		d.log.Info("QEMU guest arriving; not starting it (qemu_resume = false)", "vm", in.VM, "lazy", d.lazyDir(in.ID.String()))
		return
	}
	d.guests.set(in.ID, func(s *guestState) { s.rep.State = api.GuestStarting })
	d.views.wg.Add(1)
	go func() {
		defer d.views.wg.Done()
		guest, cfg, err := d.resumeGuest(in, g, cfgRegion)
		d.guests.set(in.ID, func(s *guestState) {
			r := &s.rep
			if err != nil {
				r.State, r.Error = api.GuestFailed, err.Error()
				return
			}
			s.guest, s.cfg = guest, cfg
			r.State, r.PID, r.QMP, r.Serial, r.RunDir = api.GuestRunning, guest.PID, guest.QMP(), guest.Serial(), guest.RunDir
			r.ResumedAfter, r.Downtime = guest.ResumedAt.Sub(in.Opened), guest.Downtime()
		})
		if err != nil {
			d.log.Error("QEMU guest not resumed; its state keeps gathering", "vm", in.VM, "err", err)
			return
		}
		d.log.Info("QEMU guest resumed", "vm", in.VM, "pid", guest.PID, "downtime", guest.Downtime(),
			"after", guest.ResumedAt.Sub(in.Opened), "serial", guest.Serial())
		select {
		case <-g.Done(): // the gather ended while QEMU started
			d.afterGather(in, g)
		default:
		}
	}()
}

// resumeGuest reads the guest config through the gather (a demand read)
// and starts QEMU on the views: memory, kernel, initrd and device state
// from the FUSE files, disks from the NBD exports.
func (d *Daemon) resumeGuest(in *fetch.Incoming, g *fetch.Gatherer, cfgRegion int) (*qemu.Guest, qemu.Config, error) {
	lazy := d.lazyDir(in.ID.String())
	if lazy == "" {
		return nil, qemu.Config{}, fmt.Errorf("no lazy FUSE view of its memory (is /dev/fuse available?)")
	}
	ctx, cancel := context.WithTimeout(d.runCtx, resumeTimeout)
	defer cancel()
	cfg, err := qemu.ReadConfig(regionReader{ctx, g.Region(cfgRegion)}, int64(in.Regions[cfgRegion].Size))
	if err != nil {
		return nil, cfg, err
	}
	// QEMU starts while the regions it reads whole arrive: its own start
	// overlaps their transfer, and its reads find them here or in flight.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	warmed := make(chan error, 1)
	go func() { // waited for below
		t0 := time.Now()
		err := warm(wctx, in, g)
		d.log.Debug("guest's state, kernel and initrd here", "vm", in.VM, "took", time.Since(t0), "err", err)
		warmed <- err
	}()
	// QEMU is given absolute paths only (a relative data directory
	// would leave them relative to wherever QEMU runs).
	lazy = absPath(lazy)
	socks := map[string]string{}
	for region, s := range d.views.nbdSockets(in.ID) {
		socks[region] = absPath(s)
	}
	run := absPath(d.guestRunDir(in))
	dirs := []string{lazy, run}
	for _, s := range socks {
		if dir := filepath.Dir(s); !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	guest, err := qemu.Resume(ctx, cfg, qemu.ResumeConfig{
		Host: d.qemuHost(),
		Log:  d.log,
		Placement: qemu.Placement{
			Dirs:   dirs,
			File:   func(region string) string { return filepath.Join(lazy, region) },
			Disk:   func(region string) qemu.Disk { return qemu.Disk{Path: socks[region], NBD: true} },
			RunDir: run,
		},
	})
	if err != nil {
		wcancel()
	}
	if werr := <-warmed; err == nil && werr != nil {
		d.log.Warn("reading the guest's small regions ahead failed (QEMU read them itself)", "vm", in.VM, "err", werr)
	}
	return guest, cfg, err
}

// guestRunDir is a guest's own directory (QMP socket, serial log, pid
// file), under the migration's local name: no name from the network is a
// path, and the QMP socket's path stays within a unix socket's 108 bytes.
func (d *Daemon) guestRunDir(in *fetch.Incoming) string {
	return filepath.Join(d.cfg.DataDir, "guests", d.names.of(in.ID))
}

// absPath is p made absolute (p itself if that fails: the placement
// check then refuses it).
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// qemuHost is how this node runs QEMU: its local settings only.
func (d *Daemon) qemuHost() *qemu.Host {
	d.guests.setHost.Do(func() {
		d.guests.host.Binary, d.guests.host.User = d.cfg.QEMU.Binary, d.cfg.QEMU.User
		d.guests.host.SandboxOptional = d.cfg.QEMU.Sandbox == SandboxOptional
	})
	return &d.guests.host
}

// afterGather deals with a guest once its gather has ended (or its source
// gave it up; a gather still running is left alone): complete, it
// moves onto the local files; abandoned by the source (whose eviction
// failed, so the guest continues there), it is stopped here, so that one
// guest does not run in two places. Any other end (our own shutdown)
// leaves it alone.
func (d *Daemon) afterGather(in *fetch.Incoming, g *fetch.Gatherer) {
	err := g.Err()
	switch {
	case err == nil && g.Report().Complete:
		d.settleGuest(in, g)
	case errors.Is(err, fetch.ErrAbandoned):
		guest, _ := d.guests.takeToSettle(in.ID)
		if guest == nil {
			return
		}
		guest.Stop()
		d.guests.set(in.ID, func(s *guestState) {
			s.guest = nil
			s.rep.State, s.rep.Error = api.GuestFailed, "stopped here: "+err.Error()
		})
		d.log.Warn("QEMU guest stopped: its source abandoned the migration (the guest stays at the source)", "vm", in.VM, "pid", guest.PID)
	}
}

// settleGuest moves a guest resumed on the lazy views onto the gathered
// local files once its gather is complete (qemu.Rehome), so that it no
// longer depends on sgnode: its memory is <data>/vms/<migration ID>/mem.img,
// its disks disk<N>.img beside it. Called by whichever comes last, the
// gather's end or the guest's start.
func (d *Daemon) settleGuest(in *fetch.Incoming, g *fetch.Gatherer) {
	guest, cfg := d.guests.takeToSettle(in.ID)
	if guest == nil {
		return
	}
	paths := map[string]string{}
	for i, r := range in.Regions {
		paths[r.Name] = absPath(g.Paths()[i])
	}
	lazy := d.lazyDir(in.ID.String())
	flush := func() error {
		// Pages the guest dirtied through its shared mapping of the FUSE
		// file reach the local file on fsync.
		for _, r := range in.Regions {
			if manifest.Kind(r.Kind) != manifest.KindMemory {
				continue
			}
			f, err := os.OpenFile(filepath.Join(lazy, r.Name), os.O_RDWR, 0)
			if err != nil {
				return err
			}
			err = f.Sync()
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(d.runCtx, resumeTimeout)
	defer cancel()
	run := absPath(filepath.Join(d.guestRunDir(in), "local"))
	dirs := []string{run}
	for _, p := range paths {
		if dir := filepath.Dir(p); !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	next, err := qemu.Rehome(ctx, guest, cfg, qemu.ResumeConfig{
		Host: d.qemuHost(),
		Log:  d.log,
		Placement: qemu.Placement{
			Dirs:   dirs,
			File:   func(region string) string { return paths[region] },
			Disk:   func(region string) qemu.Disk { return qemu.Disk{Path: paths[region]} },
			RunDir: run,
		},
	}, flush)
	d.guests.set(in.ID, func(s *guestState) {
		r := &s.rep
		if err != nil {
			s.guest, r.Error = guest, err.Error() // still running on the views
			return
		}
		s.guest = next
		r.Local, r.PID, r.QMP, r.Serial, r.RunDir = true, next.PID, next.QMP(), next.Serial(), next.RunDir
		r.SettleDowntime = next.Downtime()
	})
	if err != nil {
		d.log.Error("QEMU guest stays on the lazy views", "vm", in.VM, "err", err)
		return
	}
	d.log.Info("QEMU guest moved onto local files", "vm", in.VM, "pid", next.PID, "downtime", next.Downtime(), "mem", paths["mem"])
}

// warm brings the regions QEMU reads whole before the guest can run
// (device state, kernel, initrd) in large parallel demand reads: many
// chunks in flight instead of QEMU's one read at a time.
func warm(ctx context.Context, in *fetch.Incoming, g *fetch.Gatherer) error {
	const piece = 4 << 20
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(4)
	for i, r := range in.Regions {
		if r.Name != qemu.StateRegion && r.Name != qemu.KernelRegion && r.Name != qemu.InitrdRegion {
			continue
		}
		for off := int64(0); off < int64(r.Size); off += piece {
			eg.Go(func() error {
				buf := make([]byte, min(piece, int64(r.Size)-off))
				if _, err := g.Region(i).ReadAt(ctx, buf, off); err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("read %s: %w", r.Name, err)
				}
				return nil
			})
		}
	}
	return eg.Wait()
}

// regionReader is a region's demand path as an io.ReaderAt.
type regionReader struct {
	ctx context.Context
	r   fetch.RegionIO
}

func (r regionReader) ReadAt(p []byte, off int64) (int, error) { return r.r.ReadAt(r.ctx, p, off) }
