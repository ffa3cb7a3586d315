package eviction

import (
	"context"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/sgrelay/sg/internal/chunk"
)

// chunkState is what the eviction knows of one distinct non-zero chunk.
// Guarded by ledger.mu.
type chunkState struct {
	id        chunk.ID
	size      int
	first     pos    // where to read it again (repair after a lost relay)
	waiting   []pos  // positions not yet reported to the destination
	holders   uint32 // targets that acknowledged it (bit = target index)
	pushing   uint32 // targets pushing it now (erasure-coded evictions only)
	satisfied bool   // has had its holders at least once
	need      uint8  // holders it needs; 0: Config.Replicas
	parity    bool   // a parity chunk: no position, coded from its stripe
	stripe    *stripe
}

// ledger is the dedup view shared by every VM of an eviction.
type ledger struct {
	mu     sync.Mutex
	chunks map[chunk.ID]*chunkState
}

// sequencer is the eviction's sink: the producer's duplicate filter is
// its ledger, whose lock it holds for a span at a time. It batches each
// new distinct chunk once (in stripes if erasure-coded), asks the
// destination what it already holds, and queues the rest on the
// scheduler.
//
//	producer ─► sequencer (ledger, batching) ─batches─► have workers (×M) ─► scheduler
type sequencer struct {
	e      *Eviction
	sc     *scheduler
	led    *ledger
	cur    *batch
	sp     *striper      // erasure-coded evictions
	now    []placement   // positions to report at once (duplicates of placed chunks)
	toHave chan []*batch // a group of lanes, or one batch
}

func newSequencer(e *Eviction, sc *scheduler) *sequencer {
	q := &sequencer{e: e, sc: sc, led: sc.led, cur: sc.newBatch(), toHave: make(chan []*batch, e.cfg.HaveWorkers)}
	if red := e.cfg.Redundancy; red.On() {
		q.sp = newStriper(sc, red)
	}
	return q
}

// run runs pr into the sequencer beside the have workers, and returns
// once every batch is queued on the scheduler.
func (q *sequencer) run(ctx context.Context, pr *producer) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(q.toHave)
		return pr.run(ctx, q)
	})
	for range q.e.cfg.HaveWorkers {
		g.Go(func() error {
			for bs := range q.toHave {
				if err := q.filterHeld(ctx, bs); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

func (q *sequencer) begin() { q.led.mu.Lock() }

func (q *sequencer) end() {
	q.led.mu.Unlock()
	if len(q.now) > 0 {
		q.sc.placed(q.now)
		q.now = q.now[:0:0]
	}
}

func (q *sequencer) seen(at pos, id chunk.ID) (int, bool) {
	st, dup := q.led.chunks[id]
	if !dup {
		return 0, false
	}
	if st.satisfied {
		q.now = append(q.now, placement{at: at, id: id, holders: st.holders})
	} else {
		st.waiting = append(st.waiting, at)
	}
	return int(st.first.vm), true
}

// add records a new chunk in the ledger and batches it; a full batch is
// sent without the ledger's lock.
func (q *sequencer) add(ctx context.Context, at pos, id chunk.ID, data []byte) error {
	st := &chunkState{id: id, size: len(data), first: at, waiting: []pos{at}}
	q.led.chunks[id] = st
	if q.sp != nil {
		bs, err := q.sp.add(int(at.vm), int(at.region), st, data)
		if err == nil && len(bs) > 0 {
			q.led.mu.Unlock()
			err = q.send(ctx, bs)
			q.led.mu.Lock()
		}
		return err
	}
	if !q.cur.fits(len(data), q.e.cfg.BatchBytes) {
		b := q.cur
		q.cur = q.sc.newBatch()
		q.led.mu.Unlock()
		err := q.send(ctx, []*batch{b})
		q.led.mu.Lock()
		if err != nil {
			return err
		}
	}
	q.cur.add(st, data)
	return nil
}

// flush sends the last batch (or group of lanes).
func (q *sequencer) flush(ctx context.Context) error {
	if q.sp != nil {
		q.led.mu.Lock()
		bs, err := q.sp.flush()
		q.led.mu.Unlock()
		if err != nil {
			return err
		}
		return q.send(ctx, bs)
	}
	if len(q.cur.items) == 0 {
		return nil
	}
	b := q.cur
	q.cur = q.sc.newBatch()
	return q.send(ctx, []*batch{b})
}

func (q *sequencer) send(ctx context.Context, bs []*batch) error {
	if len(bs) == 0 {
		return nil
	}
	select {
	case q.toHave <- bs:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// filterHeld asks the destination which chunks of bs it already holds (from
// other VMs, earlier migrations): they count as held there and are not
// sent. A destination whose store was empty at the start is not asked
// (what it has since received from others is rare, and only costs its
// bytes again). The lanes of a group are queued only once all are asked about, so
// no target takes a shard of a stripe another shard of which turns out to
// be at the destination already.
func (q *sequencer) filterHeld(ctx context.Context, bs []*batch) error {
	sc := q.sc
	for bi, b := range bs {
		if q.e.cfg.SkipHaveQueries || sc.targets[destIndex].empty || b.items[0].parity {
			continue
		}
		ids := make([]chunk.ID, len(b.items))
		for i, st := range b.items {
			ids[i] = st.id
		}
		held, err := q.e.cl.Have(ctx, q.e.cfg.Dest, ids)
		if err != nil {
			// Not fatal: the chunks are simply sent.
			q.e.log.Debug("have query to destination failed", "err", err)
			continue
		}
		var heldItems []int
		for i, h := range held {
			if h {
				heldItems = append(heldItems, i)
			}
		}
		if len(heldItems) > 0 {
			sc.alreadyHeld.Add(int64(len(heldItems)))
			sc.acked(b, heldItems, destIndex)
			bs[bi] = sc.withoutSatisfied(b)
		}
	}
	for _, b := range bs {
		if len(b.items) == 0 {
			continue
		}
		if err := sc.enqueue(ctx, b); err != nil {
			return err
		}
	}
	return nil
}
