package fetch

// The prefetch path of a gather: chunks already on this host are copied,
// the rest fetched around recent faults first, then in order.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/seal"
	"github.com/sgrelay/sg/internal/wire"
)

// suspectFor is how long a holder whose prefetch failed or stalled is
// asked only when no other holder has the chunk.
const suspectFor = 10 * time.Second

// stallTimeout is how long a prefetch request may go unanswered: long
// enough for a slow link (eight times the holder's usual latency), never
// under two seconds.
func (g *Gatherer) stallTimeout(p string) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	hs := g.holder(p)
	return max(2*time.Second, 8*max(hs.lat, hs.rtt))
}

// maxPrefetchBytes caps one prefetch request's answer (the holder's frame
// cap is 8 MiB; 1 MiB keeps demand answers from waiting long behind it).
const maxPrefetchBytes = 1 << 20

// copyLocal materializes placed positions whose chunk is already in the
// local store: pushed here during the scatter, or from another VM. Runs of
// consecutive positions go to the file in one write (up to copyRunBytes),
// not one per chunk.
func (g *Gatherer) copyLocal() {
	g.mu.Lock()
	todo := g.local
	g.local = nil
	g.mu.Unlock()
	slices.SortFunc(todo, func(a, b Position) int {
		if a.Region != b.Region {
			return a.Region - b.Region
		}
		return cmp.Compare(a.Index, b.Index)
	})
	var run []Position
	var buf, one []byte
	flush := func() bool {
		if len(run) == 0 {
			return true
		}
		r := g.in.Regions[run[0].Region]
		off := int64(run[0].Index) * int64(r.ChunkSize)
		err := error(nil)
		if _, werr := g.files[run[0].Region].WriteAt(buf, off); werr != nil {
			err = fmt.Errorf("write %s at %d: %w", r.Name, off, werr)
		}
		g.mu.Lock()
		if err != nil {
			g.failLocked(err)
		} else {
			g.st.LocalChunks += int64(len(run))
			for _, at := range run {
				g.markPresentLocked(at, nil)
			}
			g.checkCompleteLocked()
		}
		g.mu.Unlock()
		run, buf = run[:0], buf[:0]
		return err == nil
	}
	for _, at := range todo {
		g.mu.Lock()
		id := g.known[at.Region][at.Index]
		done := g.present[at.Region][at.Index]
		plain, sealed := g.plains[id]
		g.mu.Unlock()
		if done || id.IsZero() {
			continue
		}
		var err error
		if one, err = g.store.Get(id, one); err == nil && chunk.Verify(id, one) {
			if sealed {
				seal.Chunk(one, one, plain) // our copy of the stored bytes
			}
		} else if one, err = g.readPresent(id, one); err != nil {
			// Not in the store (it may be full), nor at another position
			// of ours yet: prefetch will fetch it.
			continue
		}
		r := g.in.Regions[at.Region]
		if want := min(int64(r.ChunkSize), int64(r.Size)-int64(at.Index)*int64(r.ChunkSize)); int64(len(one)) != want {
			g.mu.Lock()
			g.failLocked(fmt.Errorf("chunk %s is %d bytes, position %d of %s needs %d: %w", id.Short(), len(one), at.Index, r.Name, want, ErrGatherFailed))
			g.mu.Unlock()
			return
		}
		g.store.Pin(g.in.ID.String(), id)
		if n := len(run); n > 0 && (run[n-1].Region != at.Region || run[n-1].Index+1 != at.Index || len(buf)+len(one) > copyRunBytes) {
			if !flush() {
				return
			}
		}
		run = append(run, at)
		buf = append(buf, one...)
	}
	flush()
}

// copyRunBytes bounds one write of consecutive local chunks.
const copyRunBytes = 1 << 20

// readPresent reads id from a position of ours that already has it (the
// plaintext, for a sealed chunk).
func (g *Gatherer) readPresent(id chunk.ID, buf []byte) ([]byte, error) {
	g.mu.Lock()
	fileID := g.fileIDLocked(id)
	var from *Position
	for _, p := range g.positions[id] {
		if g.present[p.Region][p.Index] {
			from = &p
			break
		}
	}
	g.mu.Unlock()
	if from == nil {
		return buf, ErrUnavailable
	}
	r := g.in.Regions[from.Region]
	off := int64(from.Index) * int64(r.ChunkSize)
	n := int(min(int64(r.ChunkSize), int64(r.Size)-off))
	buf = slices.Grow(buf[:0], n)[:n]
	if _, err := g.files[from.Region].ReadAt(buf, off); err != nil {
		return buf, err
	}
	if !chunk.Verify(fileID, buf) {
		return buf, ErrUnavailable
	}
	return buf, nil
}

// prefetchRound starts prefetch requests while holders have window room:
// first around recent faults (bubbling outwards), then the recorded
// working set, then everything in order.
func (g *Gatherer) prefetchRound(ctx context.Context) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failed != nil || !g.completeAt.IsZero() {
		return
	}
	// Requests being built this round, per holder; a holder takes as many
	// as its window has room for.
	byHolder := map[string][][]*flight{}
	budget := 0
	const (
		added = iota
		skipped
		holderFull
	)
	add := func(at Position) int {
		if g.present[at.Region][at.Index] {
			return skipped
		}
		id := g.known[at.Region][at.Index]
		if id.IsZero() || g.flights[id] != nil {
			return skipped
		}
		if g.store.Has(id) {
			g.local = append(g.local, at) // here already: copy, never fetch
			return skipped
		}
		cs := int(g.in.Regions[at.Region].ChunkSize)
		// A holder has room if its last request this round has space, or
		// its window can take one more request.
		room := func(p string) bool {
			reqs := byHolder[p]
			if n := len(reqs); n > 0 && len(reqs[n-1]) < g.cfg.PrefetchBatch && (len(reqs[n-1])+1)*cs <= maxPrefetchBytes {
				return true
			}
			return g.holder(p).inflight+len(reqs) < g.cfg.PrefetchWindow
		}
		p := g.pickHolderLocked(id, nil, room)
		if p == "" {
			if g.pickHolderLocked(id, nil, nil) != "" {
				return holderFull // every holder of it is busy: wait
			}
			if _, rebuildable := g.stripeOf[id]; rebuildable || len(g.avoid[id]) > 0 {
				g.unavailableLocked(id)
			}
			return skipped
		}
		reqs := byHolder[p]
		if n := len(reqs); n == 0 || len(reqs[n-1]) >= g.cfg.PrefetchBatch || (len(reqs[n-1])+1)*cs > maxPrefetchBytes {
			reqs = append(reqs, nil)
		}
		f := &flight{id: id, tried: map[string]bool{p: true}}
		g.flights[id] = f
		reqs[len(reqs)-1] = append(reqs[len(reqs)-1], f)
		byHolder[p] = reqs
		budget++
		return added
	}
	limit := g.cfg.PrefetchBatch * g.cfg.PrefetchWindow * 4
	if !g.anyRoomLocked() {
		return
	}
	// 1. Bubble around recent faults, newest first.
	for i := len(g.recent) - 1; i >= 0 && budget < limit; i-- {
		at := g.recent[i]
		n := uint64(len(g.present[at.Region]))
		for d := uint64(1); d <= uint64(g.cfg.Bubble) && budget < limit; d++ {
			if at.Index+d < n {
				add(Position{at.Region, at.Index + d})
			}
			if at.Index >= d {
				add(Position{at.Region, at.Index - d})
			}
		}
	}
	// 2. The recorded working set.
	for len(g.cfg.WorkingSet) > 0 && budget < limit {
		at := g.cfg.WorkingSet[0]
		g.cfg.WorkingSet = g.cfg.WorkingSet[1:]
		if at.Region >= 0 && at.Region < len(g.present) && at.Index < uint64(len(g.present[at.Region])) {
			add(at)
		}
	}
	// 3. Sequentially from the cursor (skipping what is not placed yet).
	// The scan is capped per round: the cursor persists, so rounds cover
	// everything without holding the lock for a whole VM's worth. It
	// stops, without moving on, at a chunk whose holder is busy.
	// While the source still scatters, this bulk waits (unless told not
	// to): it would share our downlink with the source's pushes and so
	// hold the source longer, the number that matters most. Unless the
	// source said its relays can take all it sends: then what our pulls
	// take from its pushes to us, it pushes to them, and our downlink's
	// spare goes to the gather (a TMT close to a direct migration's when
	// the destination is nearly as fast as the source).
	bulk := g.finished || g.cfg.BulkDuringScatter || g.in.PullDuringScatter
	for scanned := int64(0); bulk && scanned < min(g.nTotal, int64(limit)*8) && budget < limit; scanned++ {
		if add(g.cursor) == holderFull {
			break
		}
		g.cursor.Index++
		if g.cursor.Index >= uint64(len(g.present[g.cursor.Region])) {
			g.cursor = Position{(g.cursor.Region + 1) % len(g.present), 0}
		}
	}
	for p, reqs := range byHolder {
		for _, fs := range reqs {
			g.holder(p).inflight++
			g.spawn(func() { g.prefetchBatch(ctx, p, fs) })
		}
	}
}

// anyRoomLocked reports whether some holder can take another prefetch request.
func (g *Gatherer) anyRoomLocked() bool {
	for _, p := range g.in.Peers() {
		if g.holder(p).inflight < g.cfg.PrefetchWindow {
			return true
		}
	}
	return false
}

// prefetchBatch fetches a batch from one holder; chunks it fails on go back
// to the pool for the next round (or a demand read).
func (g *Gatherer) prefetchBatch(ctx context.Context, p string, fs []*flight) {
	ids := make([]chunk.ID, len(fs))
	for i, f := range fs {
		ids[i] = f.id
	}
	var ok []got
	var bad []wire.GetResult // non-OK results, by position in ids
	fail := func(err error) { g.log.Debug("prefetch failed", "peer", p, "err", err) }
	start := time.Now()
	octx, cancel := context.WithTimeout(ctx, g.stallTimeout(p)) // a dead host's stream never opens
	gs, err := g.getter(octx, p, false)
	cancel()
	if err == nil {
		ch := make(chan error, 1)
		if gerr := gs.Get(ctx, ids, func(rs []wire.GetResult, err error) {
			if err == nil {
				for i, r := range rs {
					if r.Status == wire.StatusOK {
						ok = append(ok, got{ids[i], slices.Clone(r.Data)})
					} else {
						bad = append(bad, wire.GetResult{Status: r.Status, Data: ids[i][:]})
					}
				}
			}
			ch <- err
		}); gerr != nil {
			g.dropGetter(p, gs, false)
		}
		stall := time.NewTimer(g.stallTimeout(p))
		select {
		case err = <-ch:
		case <-stall.C:
			// A holder that stops answering (crashed, cut off) would hold
			// these chunks until the node notices it is gone; reset the
			// stream instead and fetch them elsewhere.
			g.dropGetter(p, gs, false)
			err = <-ch
			if err == nil {
				err = errors.New("answer came as the stream was reset")
			}
			err = fmt.Errorf("no answer in %v: %w", g.stallTimeout(p), err)
		}
		stall.Stop()
	}
	if err != nil {
		fail(err)
	}
	paced := false
	if g.cfg.Intake != nil && len(ok) > 0 {
		// The node's intake cap: this request's slot stays taken until
		// its bytes are paid for, so bulk prefetch keeps to the cap.
		var n int
		for _, o := range ok {
			n += len(o.data)
		}
		paced = true
		defer func() {
			_ = g.cfg.Intake.Wait(ctx, n)
			g.mu.Lock()
			g.holder(p).inflight--
			g.mu.Unlock()
			g.poke()
		}()
	}
	g.mu.Lock()
	if err != nil {
		// Try the others first for a while.
		g.holder(p).suspectUntil = time.Now().Add(suspectFor)
		g.holder(p).failStreak++
	} else {
		g.holder(p).failStreak = 0
	}
	if !paced {
		g.holder(p).inflight--
	}
	if err == nil {
		g.recordLatencyLocked(p, time.Since(start))
	}
	for _, b := range bad {
		id := chunk.ID(b.Data)
		g.avoidLocked(id, p)
		if b.Status == wire.StatusBadHash && !g.holder(p).demoted {
			g.holder(p).demoted = true
			g.log.Warn("holder served wrong bytes; demoted", "peer", p, "chunk", id.Short())
		}
	}
	// Flights not delivered end here; the next round (or a fault) retries.
	delivered := map[chunk.ID]bool{}
	for _, o := range ok {
		delivered[o.id] = true
	}
	var mine []got
	for _, f := range fs {
		if delivered[f.id] && !f.done {
			f.done = true // deliver removes the flight once the bytes are written
			for _, o := range ok {
				if o.id == f.id {
					mine = append(mine, o)
				}
			}
			continue
		}
		if !f.done {
			f.done = true
			if f.demand { // a demand read is waiting on it: go on as demand
				nf := &flight{id: f.id, demand: true, tried: map[string]bool{}}
				g.flights[f.id] = nf
				g.spawn(func() { g.fetchByID(nf, true) })
				continue
			}
		}
		if g.flights[f.id] == f {
			delete(g.flights, f.id)
		}
	}
	for _, o := range mine {
		g.st.FetchedBytes[p] += int64(len(o.data))
		g.st.PrefetchChunks++
		if !g.finished {
			g.st.PrefetchedDuringScatter += int64(len(o.data))
		}
	}
	g.mu.Unlock()
	g.keepAll(mine)
	for _, o := range mine {
		if err := g.deliver(o.id, o.data, nil); err != nil {
			g.mu.Lock()
			g.failLocked(err)
			g.mu.Unlock()
			return
		}
	}
	if err == nil {
		// A slot is free: fill it now. After a failure the next round
		// comes with the timer instead, or a holder that cannot even be
		// dialled would be retried in a tight loop.
		g.poke()
	}
}
