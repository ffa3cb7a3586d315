package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/wire"
)

// retirePoll is how often an ended migration's views are checked for use.
const retirePoll = 200 * time.Millisecond

// retireWhenUnused ends an incoming migration's life here once its gather
// has ended. A complete one waits until nothing uses its views (no handle
// on its FUSE files, no NBD client, no guest running on them; the guest
// moved to the local files); a failed or abandoned one is torn down at
// once. Teardown unmounts the views, stops the NBD exports, retires the
// gather (files, per-position state, pins) and leaves one record for
// `sgctl migrations`, and removes what nothing will use (removeLeftovers).
func (d *Daemon) retireWhenUnused(in *fetch.Incoming, g *fetch.Gatherer, gatherErr error) {
	id := in.ID
	if gatherErr == nil {
		t := time.NewTicker(retirePoll)
		defer t.Stop()
		for d.viewsInUse(id) {
			select {
			case <-d.runCtx.Done():
				return // shutdown takes the views down
			case <-t.C:
			}
		}
	}
	rec := d.incomingRecord(in.Status()) // Lazy and NBD say where the views were
	m := d.takeLazy(id.String())
	if m != nil {
		if gatherErr == nil {
			_ = m.Unmount()
		} else {
			m.Abort()
		}
	}
	d.views.close(id)
	rec.Guest = d.guests.get(id)
	use := d.guests.use(id)
	// The record is listed before the migration leaves the incomings, so
	// that `sgctl migrations` never misses it (migrationsList shows one
	// of the two while both exist).
	d.out.retired(rec)
	d.roles.Retire(id)
	d.guests.forget(id)
	vmDir := ""
	if paths := g.Paths(); len(paths) > 0 {
		vmDir = filepath.Dir(paths[0])
	}
	d.removeLeftovers(in.VM, vmDir, d.guestRunDir(in), gatherErr, use)
	d.log.Info("migration retired", "vm", in.VM, "migration", id, "state", rec.State)
	if m != nil && gatherErr != nil {
		// The aborted view's server ends once the last process holding
		// it lets go; shutdown does not wait for that process.
		select {
		case <-m.Done():
		case <-d.runCtx.Done():
		}
	}
}

// guestUse is what a migration's guest process uses at its retirement.
type guestUse struct {
	starting bool // QEMU is being started (it makes and uses the run directory)
	running  bool // a QEMU process is known (on the views or the local files)
	local    bool // it runs on the gathered files
	resumed  bool // a guest ran here: its writes are in the gathered files
	failed   bool // its start failed: its logs say why
}

// use reports how migration id's guest uses its files now.
func (gs *guests) use(id wire.MigrationID) guestUse {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	s := gs.m[id]
	if s == nil {
		return guestUse{}
	}
	return guestUse{starting: s.rep.State == api.GuestStarting, running: s.guest != nil, local: s.guest != nil && s.rep.Local,
		resumed: s.rep.ResumedAfter > 0, failed: s.rep.State == api.GuestFailed}
}

// removeLeftovers removes what a retired migration leaves on disk that
// nothing will use, so that failures a source provokes (a gather it makes
// fail after most of the data arrived, again and again) cannot fill the
// data directory. The gathered files of a gather that did not complete go,
// unless a guest ran on them: its writes since it resumed are there and
// nowhere else (but an abandoned migration's guest goes on at its source,
// so its copy here is worth nothing once stopped). The guest's run
// directory (serial log, QEMU log, QMP socket) goes unless a guest process
// is starting or running, or its start failed (the logs say why). A
// complete gather's files are the VM: kept.
func (d *Daemon) removeLeftovers(vm, vmDir, runDir string, gatherErr error, use guestUse) {
	live := use.starting || use.running || use.local
	worthless := !use.resumed || errors.Is(gatherErr, fetch.ErrAbandoned)
	if gatherErr != nil && vmDir != "" && !live && worthless {
		if err := os.RemoveAll(vmDir); err != nil {
			d.log.Warn("an unfinished migration's files not removed", "vm", vm, "dir", vmDir, "err", err)
		}
	}
	if !live && !use.failed {
		if err := os.RemoveAll(runDir); err != nil {
			d.log.Warn("a retired guest's run directory not removed", "vm", vm, "dir", runDir, "err", err)
		}
	}
}

// viewsInUse reports whether anything still uses migration id's views.
func (d *Daemon) viewsInUse(id wire.MigrationID) bool {
	return d.lazyOpen(id.String()) > 0 || d.views.clients(id) > 0 || d.guests.onViews(id)
}

// onViews reports whether a guest of migration id is starting or runs on
// the lazy views (not yet moved onto the local files).
func (gs *guests) onViews(id wire.MigrationID) bool {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	s := gs.m[id]
	if s == nil {
		return false
	}
	return s.rep.State == api.GuestStarting || s.guest != nil && !s.rep.Local
}

// forget drops what is known of migration id's guest, unless a guest
// process still runs (on the local files): its handle is kept to stop it.
func (gs *guests) forget(id wire.MigrationID) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if s := gs.m[id]; s == nil || s.guest == nil {
		delete(gs.m, id)
	}
	delete(gs.noStart, id)
}

// registerLifetimeMetrics exports what the node's migrations hold now. No
// migration ID is a label: the set of series stays fixed however many
// migrations the node sees.
func (d *Daemon) registerLifetimeMetrics() {
	d.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sg_lazy_views_mounted", Help: "FUSE views of incoming migrations mounted now."},
			func() float64 { return float64(d.lazyCount()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sg_nbd_exports_open", Help: "Incoming migrations whose disks are exported over NBD now."},
			func() float64 { return float64(d.views.count()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sg_incoming_migration_bytes", Help: "VM bytes of the migrations open here (not yet retired)."},
			func() float64 {
				var n int64
				for _, in := range d.roles.Incomings().List() {
					n += in.Bytes
				}
				return float64(n)
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sg_incoming_migration_positions", Help: "Chunk positions of the migrations open here: their per-position state is in proportion."},
			func() float64 {
				var n int64
				for _, in := range d.roles.Incomings().List() {
					n += in.Chunks
				}
				return float64(n)
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sg_migration_records", Help: "Ended migrations kept for sgctl migrations (bounded by migration_records)."},
			func() float64 { return float64(d.out.ended()) }),
	)
}
