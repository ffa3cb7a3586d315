package eviction

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/wire"
)

// placement is one position whose chunk has its holders.
type placement struct {
	at      pos
	id      chunk.ID
	holders uint32
}

// placer streams placements to each VM's destination session in frames,
// so the destination can fetch placed chunks from their holders while the
// eviction goes on.
type placer struct {
	e       *Eviction
	mu      sync.Mutex
	pending [][]wire.Placement // per VM
	pushes  [][]wire.PushPlacement
	kick    chan struct{} // capacity 1: a frame's worth is waiting
	hurried bool          // every placement is sent as it comes
	done    chan struct{} // closed by close: flush and return
	once    sync.Once
}

func newPlacer(e *Eviction) *placer {
	return &placer{e: e, pending: make([][]wire.Placement, len(e.vms)), pushes: make([][]wire.PushPlacement, len(e.vms)),
		kick: make(chan struct{}, 1), done: make(chan struct{})}
}

func (p *placer) add(ps []placement) {
	p.mu.Lock()
	n := 0
	for _, pl := range ps {
		wp := wire.Placement{Region: pl.at.region, Index: pl.at.index, ID: pl.id, Holders: pl.holders}
		if v := &p.e.vms[pl.at.vm]; v.plains != nil {
			wp.Plain = v.plains[pl.at.region][pl.at.index]
		}
		p.pending[pl.at.vm] = append(p.pending[pl.at.vm], wp)
		n = max(n, len(p.pending[pl.at.vm]))
	}
	hurried := p.hurried
	p.mu.Unlock()
	if hurried || n >= p.e.cfg.PlacementBatch {
		p.wake()
	}
}

// pushesPerFrame push placements (a batch of chunks each; sixteen take
// under a kilobyte) make a frame worth sending before the next flush.
const pushesPerFrame = 16

// addPush queues a push placement.
func (p *placer) addPush(pp pushPlacement) {
	p.mu.Lock()
	p.pushes[pp.vm] = append(p.pushes[pp.vm], pp.pp)
	kick := p.hurried || len(p.pushes[pp.vm]) >= pushesPerFrame
	p.mu.Unlock()
	if kick {
		p.wake()
	}
}

// hurry makes every placement from now on travel at once, not in a frame
// of PlacementBatch: called once everything is read, so that at the end
// only the last acks' placements stand between the source and Done (a
// full frame is ~35 KB, 2 ms on a 130 Mbit/s destination's link).
func (p *placer) hurry() {
	p.mu.Lock()
	p.hurried = true
	p.mu.Unlock()
	p.wake()
}

// wake makes run flush now (once, however many call it meanwhile).
func (p *placer) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// close makes run flush what is pending and return.
func (p *placer) close() { p.once.Do(func() { close(p.done) }) }

// run sends pending placements every PlacementFlush, or sooner when a
// frame's worth is waiting, until closed. It sends nothing until opened
// is closed: every session is open by then.
func (p *placer) run(ctx context.Context, opened <-chan struct{}) error {
	select {
	case <-opened:
	case <-ctx.Done():
		return ctx.Err()
	}
	t := time.NewTicker(p.e.cfg.PlacementFlush)
	defer t.Stop()
	for {
		final := false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			final = true
		case <-t.C:
		case <-p.kick:
		}
		if err := p.flush(ctx); err != nil {
			return err
		}
		if final {
			return nil
		}
	}
}

func (p *placer) flush(ctx context.Context) error {
	p.mu.Lock()
	work, pushes := p.pending, p.pushes
	p.pending, p.pushes = make([][]wire.Placement, len(p.e.vms)), make([][]wire.PushPlacement, len(p.e.vms))
	p.mu.Unlock()
	for vi, pps := range pushes {
		for len(pps) > 0 {
			n := min(len(pps), wire.MaxPushPlacements)
			if err := p.e.vms[vi].session.PushPlacements(ctx, pps[:n]); err != nil {
				return fmt.Errorf("placements to destination for %s: %w", p.e.vms[vi].Name, err)
			}
			pps = pps[n:]
		}
	}
	for vi, ps := range work {
		// In position order, placements share run headers on the wire.
		slices.SortStableFunc(ps, func(a, b wire.Placement) int {
			return cmp.Or(cmp.Compare(a.Region, b.Region), cmp.Compare(a.Index, b.Index))
		})
		for len(ps) > 0 {
			n := min(len(ps), p.e.cfg.PlacementBatch, wire.MaxPlacements)
			if err := p.e.vms[vi].session.Placements(ctx, ps[:n]); err != nil {
				return fmt.Errorf("placements to destination for %s: %w", p.e.vms[vi].Name, err)
			}
			ps = ps[n:]
		}
	}
	return nil
}
