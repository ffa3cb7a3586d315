package eviction

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/seal"
)

// pos is one chunk position: VM, region, chunk index.
type pos struct {
	vm, region uint16
	index      uint64
}

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

// span is a run of chunks of one region, read and hashed as a unit.
type span struct {
	vm, region int
	first      uint64 // index of the first chunk
	chunkSize  int
	buf        []byte
	ids        []chunk.ID
	plains     []chunk.ID // sealed: the plain IDs (buf then holds ciphertext)
}

// producer reads every region, hashes in parallel, drops zeros and
// duplicates, asks the destination what it already holds, and hands new
// chunks to the scheduler in batches.
//
//	reader ─spans─► hashers (×N) ─spans─► sequencer (dedup, batching) ─batches─► have workers (×M) ─► scheduler
type producer struct {
	e    *Eviction
	sc   *scheduler
	read atomic.Int64
	pool sync.Pool

	// Counted by the sequencer only; read after run returns.
	uniqueChunks, uniqueBytes int64
}

func newProducer(e *Eviction, sc *scheduler) *producer {
	p := &producer{e: e, sc: sc}
	p.pool.New = func() any { return &span{buf: make([]byte, 0, e.cfg.SpanBytes)} }
	return p
}

func (p *producer) run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	hashers := p.e.cfg.Hashers
	toHash := make(chan *span, 2*hashers)
	toSeq := make(chan *span, 2*hashers)
	toHave := make(chan []*batch, p.e.cfg.HaveWorkers) // a group of lanes, or one batch

	g.Go(func() error {
		defer close(toHash)
		return p.readAll(ctx, toHash)
	})
	var hw sync.WaitGroup
	for range hashers {
		hw.Add(1)
		g.Go(func() error {
			defer hw.Done()
			for s := range toHash {
				hashSpan(s, p.e.cfg.Seal)
				select {
				case toSeq <- s:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		})
	}
	g.Go(func() error { hw.Wait(); close(toSeq); return nil })
	g.Go(func() error {
		defer close(toHave)
		return p.sequence(ctx, toSeq, toHave)
	})
	for range p.e.cfg.HaveWorkers {
		g.Go(func() error {
			for bs := range toHave {
				if err := p.filterHeld(ctx, bs); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// readAll reads every region of every VM in spans.
func (p *producer) readAll(ctx context.Context, out chan<- *span) error {
	for vi := range p.e.vms {
		v := &p.e.vms[vi]
		for ri, r := range v.Regions {
			per := max(1, p.e.cfg.SpanBytes/r.ChunkSize) * r.ChunkSize
			for off := int64(0); off < r.Size; off += int64(per) {
				s := p.pool.Get().(*span)
				n := int(min(int64(per), r.Size-off))
				s.vm, s.region, s.first, s.chunkSize = vi, ri, uint64(off/int64(r.ChunkSize)), r.ChunkSize
				s.buf = slices.Grow(s.buf[:0], n)[:n] // pooled: no allocation per span
				got, err := r.Data.ReadAt(s.buf, off)
				if err != nil && !(errors.Is(err, io.EOF) && got == n) {
					if got < n && (err == nil || errors.Is(err, io.EOF)) {
						// The pooled buffer's tail would be stale bytes:
						// never hash and send them.
						return fmt.Errorf("%s %s: %w: %d bytes at %d, the image ends after %d (truncated during the eviction?)",
							v.Name, r.Name, ErrImageChanged, n, off, off+int64(got))
					}
					return fmt.Errorf("read %s %s at %d: %w", v.Name, r.Name, off, err)
				}
				p.read.Add(int64(n))
				select {
				case out <- s:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
	}
	return nil
}

// hashSpan fills s.ids: chunk.Zero for zero chunks, else the hash. Zero
// detection runs first: it costs a few percent of hashing. With sealed,
// each non-zero chunk is sealed in place and named by its ciphertext, and
// s.plains gets the plaintexts' IDs.
func hashSpan(s *span, sealed bool) {
	s.ids, s.plains = s.ids[:0], s.plains[:0]
	for o := 0; o < len(s.buf); o += s.chunkSize {
		c := s.buf[o:min(len(s.buf), o+s.chunkSize)]
		switch {
		case chunk.IsZeroData(c):
			s.ids = append(s.ids, chunk.Zero)
			if sealed {
				s.plains = append(s.plains, chunk.Zero)
			}
		case sealed:
			id, plain := seal.Sum(c)
			s.ids, s.plains = append(s.ids, id), append(s.plains, plain)
		default:
			s.ids = append(s.ids, chunk.Sum(c))
		}
	}
}

// sequence records every position for the manifests and batches each new
// distinct chunk once. It is the only writer of the ledger's map.
func (p *producer) sequence(ctx context.Context, in <-chan *span, out chan<- []*batch) error {
	led := p.sc.led
	cur := p.sc.newBatch()
	send := func(bs []*batch) error {
		if len(bs) == 0 {
			return nil
		}
		select {
		case out <- bs:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	flush := func() error {
		if len(cur.items) == 0 {
			return nil
		}
		err := send([]*batch{cur})
		cur = p.sc.newBatch()
		return err
	}
	var sp *striper
	if red := p.e.cfg.Redundancy; red.On() {
		sp = newStriper(p.sc, red)
		flush = func() error { // the last group, outside the sequencer's loop
			led.mu.Lock()
			bs, err := sp.flush()
			led.mu.Unlock()
			if err == nil {
				err = send(bs)
			}
			return err
		}
	}
	var now []placement // positions to report at once (duplicates of placed chunks)
	for s := range in {
		v := &p.e.vms[s.vm]
		led.mu.Lock()
		for i, id := range s.ids {
			at := pos{vm: uint16(s.vm), region: uint16(s.region), index: s.first + uint64(i)}
			v.ids[s.region][at.index] = id
			if v.plains != nil {
				v.plains[s.region][at.index] = s.plains[i]
			}
			v.res.Chunks++
			if id.IsZero() {
				v.res.ZeroChunks++
				continue
			}
			if st, dup := led.chunks[id]; dup {
				if int(st.first.vm) == s.vm {
					v.res.DupWithin++
				} else {
					v.res.DupAcross++
				}
				if st.satisfied {
					now = append(now, placement{at: at, id: id, holders: st.holders})
				} else {
					st.waiting = append(st.waiting, at)
				}
				continue
			}
			data := s.buf[i*s.chunkSize : min(len(s.buf), (i+1)*s.chunkSize)]
			st := &chunkState{id: id, size: len(data), first: at, waiting: []pos{at}}
			led.chunks[id] = st
			p.uniqueChunks++
			p.uniqueBytes += int64(len(data))
			if sp != nil {
				bs, err := sp.add(s.vm, s.region, st, data)
				if err == nil && len(bs) > 0 {
					led.mu.Unlock()
					err = send(bs)
					led.mu.Lock()
				}
				if err != nil {
					led.mu.Unlock()
					return err
				}
				continue
			}
			if !cur.fits(len(data), p.e.cfg.BatchBytes) {
				led.mu.Unlock()
				if err := flush(); err != nil {
					return err
				}
				led.mu.Lock()
			}
			cur.add(st, data)
		}
		led.mu.Unlock()
		p.pool.Put(s)
		if len(now) > 0 {
			p.sc.placed(now)
			now = now[:0:0]
		}
	}
	return flush()
}

// filterHeld asks the destination which chunks of bs it already holds (from
// other VMs, earlier migrations): they count as held there and are not
// sent. A destination whose store was empty at the start is not asked
// (what it has since received from others is rare, and only costs its
// bytes again). The lanes of a group are queued only once all are asked about, so
// no target takes a shard of a stripe another shard of which turns out to
// be at the destination already.
func (p *producer) filterHeld(ctx context.Context, bs []*batch) error {
	for bi, b := range bs {
		if p.e.cfg.SkipHaveQueries || p.sc.targets[destIndex].empty || b.items[0].parity {
			continue
		}
		ids := make([]chunk.ID, len(b.items))
		for i, st := range b.items {
			ids[i] = st.id
		}
		held, err := p.e.cl.Have(ctx, p.e.cfg.Dest, ids)
		if err != nil {
			// Not fatal: the chunks are simply sent.
			p.e.log.Debug("have query to destination failed", "err", err)
			continue
		}
		var heldItems []int
		for i, h := range held {
			if h {
				heldItems = append(heldItems, i)
			}
		}
		if len(heldItems) > 0 {
			p.sc.alreadyHeld.Add(int64(len(heldItems)))
			p.sc.acked(b, heldItems, destIndex)
			bs[bi] = p.sc.withoutSatisfied(b)
		}
	}
	for _, b := range bs {
		if len(b.items) == 0 {
			continue
		}
		if err := p.sc.enqueue(ctx, b); err != nil {
			return err
		}
	}
	return nil
}
