package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sgrelay/sg/internal/eviction"
	"github.com/sgrelay/sg/internal/vm"
)

// paused is the VMs of one eviction, paused at the source with their
// snapshots open, until they are resumed here (the eviction failed) or
// released (it succeeded).
type paused struct {
	log     *slog.Logger
	drivers []vm.Driver
	snaps   []*vm.Snapshot
	vms     []eviction.VM // what the eviction reads, one per snapshot
}

// pause pauses every VM named before anything is sent, so that a missing
// or changed image stops the eviction first; if one fails, those already
// paused are resumed. Disks are cut in diskChunk (0: vm.DefaultDiskChunk).
func (d *Daemon) pause(ctx context.Context, names []string, diskChunk int) (*paused, error) {
	if diskChunk <= 0 {
		diskChunk = vm.DefaultDiskChunk
	}
	p := &paused{log: d.log}
	for _, name := range names {
		drv, err := d.driver(name)
		if err == nil {
			var snap *vm.Snapshot
			if snap, err = drv.Pause(ctx); err == nil {
				p.drivers, p.snaps = append(p.drivers, drv), append(p.snaps, snap)
				p.vms = append(p.vms, evictionVM(snap, diskChunk))
			}
		}
		if err != nil {
			p.resume(ctx)
			if errors.Is(err, vm.ErrNotFound) {
				return nil, notFound(err)
			}
			return nil, invalid("vms", err)
		}
	}
	return p, nil
}

// afterwards is a context for resuming or releasing VMs that does not
// depend on the client still listening: an aborted request (Ctrl-C at
// the client) cancels ctx.
func afterwards(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
}

// resume runs the VMs here again.
func (p *paused) resume(ctx context.Context) {
	ctx, cancel := afterwards(ctx)
	defer cancel()
	for i, s := range p.snaps {
		s.Close()
		if err := p.drivers[i].Resume(ctx); err != nil {
			p.log.Error("VM not resumed at the source after a failed eviction", "vm", s.VM, "err", err)
		}
	}
}

// release frees the VMs here: they run at their destination now.
func (p *paused) release(ctx context.Context) {
	for i, s := range p.snaps {
		s.Close()
		rctx, cancel := afterwards(ctx)
		err := p.drivers[i].Release(rctx)
		cancel()
		if err != nil {
			p.log.Warn("release evicted VM", "vm", s.VM, "err", err)
		}
	}
}

// unchanged reports an image written while the eviction read it.
func (p *paused) unchanged() error {
	for _, s := range p.snaps {
		if err := s.Unchanged(); err != nil {
			return fmt.Errorf("VM %s: %w", s.VM, err)
		}
	}
	return nil
}

// evictionVM is what the eviction reads of a snapshot: memory and state
// in their own chunk sizes, disks in diskChunk.
func evictionVM(s *vm.Snapshot, diskChunk int) eviction.VM {
	v := eviction.VM{Name: s.VM}
	for _, r := range s.Regions {
		cs := diskChunk
		switch r.Kind.String() {
		case "memory":
			cs = vm.MemoryChunkSize
		case "state":
			cs = vm.StateChunkSize
		}
		v.Regions = append(v.Regions, eviction.Region{Name: r.Name, Kind: r.Kind, Size: r.Size, ChunkSize: cs, Data: r.ReaderAt})
	}
	return v
}
