package daemon

import (
	"path/filepath"
	"sync"

	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/fetch/fuseview"
)

// lazyMounts are the FUSE views of incoming VMs, each unmounted when its
// migration is retired (or at shutdown).
type lazyMounts struct {
	mu sync.Mutex
	m  map[string]*fuseview.Mount // by migration ID
}

// mountLazy exposes an incoming VM's regions as files under
// <data>/lazy/<migration ID>/, readable (and writable) at once.
func (d *Daemon) mountLazy(in *fetch.Incoming, g *fetch.Gatherer) error {
	if err := fuseview.Available(); err != nil {
		return err
	}
	var files []fuseview.File
	for i, r := range in.Regions {
		files = append(files, fuseview.File{Name: r.Name, Size: int64(r.Size), Region: g.Region(i)})
	}
	dir := filepath.Join(d.cfg.DataDir, "lazy", in.ID.String())
	m, err := fuseview.New(dir, files)
	if err != nil {
		return err
	}
	d.lazy.mu.Lock()
	d.lazy.m[in.ID.String()] = m
	d.lazy.mu.Unlock()
	return nil
}

func (d *Daemon) lazyDir(id string) string {
	d.lazy.mu.Lock()
	defer d.lazy.mu.Unlock()
	if m := d.lazy.m[id]; m != nil {
		return m.Dir
	}
	return ""
}

// takeLazy removes migration id's view from the set and returns it (nil if none).
func (d *Daemon) takeLazy(id string) *fuseview.Mount {
	d.lazy.mu.Lock()
	defer d.lazy.mu.Unlock()
	m := d.lazy.m[id]
	delete(d.lazy.m, id)
	return m
}

// lazyOpen is how many handles processes hold on migration id's view.
func (d *Daemon) lazyOpen(id string) int64 {
	d.lazy.mu.Lock()
	defer d.lazy.mu.Unlock()
	if m := d.lazy.m[id]; m != nil {
		return m.OpenHandles()
	}
	return 0
}

// lazyCount is how many views are mounted.
func (d *Daemon) lazyCount() int {
	d.lazy.mu.Lock()
	defer d.lazy.mu.Unlock()
	return len(d.lazy.m)
}

func (d *Daemon) unmountAll() {
	d.lazy.mu.Lock()
	defer d.lazy.mu.Unlock()
	for id, m := range d.lazy.m {
		if err := m.Unmount(); err != nil {
			d.log.Warn("unmount lazy view", "dir", m.Dir, "err", err)
		}
		delete(d.lazy.m, id)
	}
}

// unmountStale detaches FUSE views an earlier sgnode left mounted under
// <data>/lazy: they would stand in the way of new views and cleanup. It
// never stats them (fuseview.DetachUnder), so a view whose connection
// another process still holds cannot hold up the start.
func (d *Daemon) unmountStale() {
	detached, err := fuseview.DetachUnder(filepath.Join(d.cfg.DataDir, "lazy"))
	for _, dir := range detached {
		d.log.Info("unmounted a lazy view left by a previous run", "dir", dir)
	}
	if err != nil {
		d.log.Warn("stale lazy view left mounted", "err", err)
	}
}
