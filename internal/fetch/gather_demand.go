package fetch

// The demand path of a gather: reads that must wait for a chunk, fetched
// by position from the source or by ID from the best holder, hedged.

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/seal"
	"github.com/sgrelay/sg/internal/wire"
)

// ensure returns once the position is here, demand-fetching it if needed.
func (g *Gatherer) ensureRange(ctx context.Context, region int, off, end int64) error {
	cs := int64(g.in.Regions[region].ChunkSize)
	first, last := off/cs, (end-1)/cs
	if first == last {
		return g.ensure(ctx, Position{region, uint64(first)})
	}
	// A read spanning several chunks asks for all of them at once (a QEMU
	// guest's loader reads its kernel in 1 MiB pieces), then waits.
	g.mu.Lock()
	var waits []chan error
	for idx := first; idx <= last; idx++ {
		if w := g.demandLocked(Position{region, uint64(idx)}); w != nil {
			waits = append(waits, w)
		}
	}
	g.mu.Unlock()
	if len(waits) > 0 {
		g.poke()
	}
	var firstErr error
	for _, w := range waits {
		if err := g.awaitDemand(ctx, w); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

func (g *Gatherer) ensure(ctx context.Context, at Position) error {
	g.mu.Lock()
	w := g.demandLocked(at)
	g.mu.Unlock()
	if w == nil {
		return nil
	}
	g.poke()
	return g.awaitDemand(ctx, w)
}

// demandLocked counts a demand read of at and, when at is missing, starts
// fetching it and returns the channel its arrival (or failure) is sent on.
func (g *Gatherer) demandLocked(at Position) chan error {
	if g.closed {
		w := make(chan error, 1)
		w <- ErrClosed
		return w
	}
	g.st.DemandReads++
	if g.present[at.Region][at.Index] {
		g.st.DemandHits++
		return nil
	}
	w := make(chan error, 1)
	if g.failed != nil {
		w <- g.failed
		return w
	}
	g.waiters[at] = append(g.waiters[at], w)
	g.noteFaultLocked(at)
	g.startDemandLocked(at)
	return w
}

// awaitDemand waits for one demand read started by demandLocked.
func (g *Gatherer) awaitDemand(ctx context.Context, w chan error) error {
	select {
	case err := <-w:
		g.mu.Lock()
		g.st.NetworkFaults++
		if g.st.FirstDemand == 0 && err == nil {
			g.st.FirstDemand = time.Since(g.in.Opened)
		}
		g.mu.Unlock()
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *Gatherer) noteFaultLocked(at Position) {
	g.recent = append(g.recent, at)
	if len(g.recent) > g.cfg.RecentFaults {
		g.recent = g.recent[len(g.recent)-g.cfg.RecentFaults:]
	}
}

// startDemandLocked fetches a missing position at demand priority: from a
// holder by ID when it is placed, else from the source by position.
func (g *Gatherer) startDemandLocked(at Position) {
	id := g.known[at.Region][at.Index]
	if id.IsZero() {
		if g.finished {
			g.markPresentLocked(at, nil)
			return
		}
		if !g.posFlights[at] {
			g.posFlights[at] = true
			g.spawn(func() { g.demandFromSource(at) })
		}
		return
	}
	if g.store.Has(id) {
		g.spawn(func() { g.copyNow(at, id) }) // here already: no network, no queue
		return
	}
	if f := g.flights[id]; f != nil {
		if !f.demand {
			// A prefetch request is bringing it, maybe behind a batch:
			// a demand read does not wait for bulk. Ask at once on the
			// demand stream; the first answer wins.
			f.demand = true
			g.spawn(func() { g.tryHolder(f, true) })
		}
		return
	}
	f := &flight{id: id, demand: true, tried: map[string]bool{}}
	g.flights[id] = f
	g.spawn(func() { g.fetchByID(f, true) })
}

// demandFromSource reads a position straight from the source's snapshot.
func (g *Gatherer) demandFromSource(at Position) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := g.sourceDemand(ctx, at)
	g.mu.Lock()
	delete(g.posFlights, at)
	if err != nil && !g.present[at.Region][at.Index] {
		switch {
		case !g.known[at.Region][at.Index].IsZero() || g.finished:
			g.startDemandLocked(at) // placed meanwhile: fetch it by ID
		default:
			// The source stops serving at its eviction time, a moment
			// before the manifest (which names every chunk, zeros too) is
			// resolved here: retry then.
			g.log.Debug("positional read refused; waiting for the manifest", "region", at.Region, "index", at.Index, "err", err)
			g.afterMap = append(g.afterMap, at)
		}
	}
	g.mu.Unlock()
}

func (g *Gatherer) sourceDemand(ctx context.Context, at Position) error {
	g.mu.Lock()
	src := g.source
	g.mu.Unlock()
	if src == nil {
		d, err := g.net.OpenDemand(ctx, g.in.Source, g.cfg.DemandWindow)
		if err != nil {
			return err
		}
		g.mu.Lock()
		surplus := g.source != nil
		if !surplus {
			g.source = d
		}
		src = g.source
		g.mu.Unlock()
		if surplus {
			d.Abort() // never used; outside the lock (see getter)
		}
	}
	type answer struct {
		st   wire.Status
		data []byte
		err  error
	}
	ch := make(chan answer, 1)
	start := time.Now()
	err := src.Demand(ctx, wire.DemandReq{ID: g.in.ID, Region: uint16(at.Region), Index: at.Index}, func(st wire.Status, data []byte, err error) {
		ch <- answer{st, slices.Clone(data), err}
	})
	if err != nil {
		g.mu.Lock()
		if g.source == src {
			g.source = nil
		}
		g.mu.Unlock()
		src.Abort()
	}
	a := <-ch
	if a.err != nil {
		return a.err
	}
	switch a.st {
	case wire.StatusZero:
		g.mu.Lock()
		g.markPresentLocked(at, nil)
		g.st.SourceChunks++
		g.checkCompleteLocked()
		g.mu.Unlock()
		return nil
	case wire.StatusOK:
	default:
		return fmt.Errorf("source answered %s", a.st)
	}
	// The source is authoritative for its own positions, and answers them
	// in plaintext: sealed here, the chunk is stored as a relay stores it
	// (so it dedups with other sealed VMs) and named by the ciphertext.
	id := chunk.Sum(a.data)
	data := a.data
	g.mu.Lock()
	if g.plains != nil {
		plain := id
		id, _ = seal.Sum(data) // in place: a.data is ours
		g.plains[id] = plain
	}
	g.st.SourceChunks++
	g.st.DemandChunks++
	g.st.FetchedBytes[g.in.Source] += int64(len(a.data))
	g.recordLatencyLocked(g.in.Source, time.Since(start))
	g.mu.Unlock()
	g.keep(id, data)
	return g.deliver(id, data, &at)
}

// keep stores a fetched chunk locally, pinned for the migration, so other
// VMs gathered on this host find it here. Best effort: a full store is fine.
func (g *Gatherer) keep(id chunk.ID, data []byte) {
	if g.store.Put(id, data) == nil {
		g.store.Pin(g.in.ID.String(), id)
	}
}

// keepAll is keep for a batch, pinning it with one call.
func (g *Gatherer) keepAll(cs []got) {
	ids := make([]chunk.ID, 0, len(cs))
	for _, c := range cs {
		if g.store.Put(c.id, c.data) == nil {
			ids = append(ids, c.id)
		}
	}
	g.store.Pin(g.in.ID.String(), ids...)
}

// got is a fetched chunk.
type got struct {
	id   chunk.ID
	data []byte
}

// pickHolderLocked chooses where to fetch id from: the holder expected to
// answer first (in-flight requests × latency, RTT until measured; another
// zone costs half an RTT more) among those not tried, not known to lack
// it, not demoted, and with room if room is given.
func (g *Gatherer) pickHolderLocked(id chunk.ID, tried map[string]bool, room func(string) bool) string {
	mask, peers := g.in.holderMask(id)
	best, bestScore := "", time.Duration(1<<62)
	for i := 0; mask != 0; i, mask = i+1, mask>>1 {
		if mask&1 == 0 {
			continue
		}
		p, ok := peers[uint8(i)]
		if !ok || tried[p] || g.avoid[id][p] || (room != nil && !room(p)) {
			continue
		}
		hs := g.holder(p)
		if hs.goneLocked() {
			if _, rebuildable := g.stripeOf[id]; rebuildable {
				continue
			}
		}
		g.refreshPeerLocked(p, hs)
		// Expected time to an answer: behind what is in flight there,
		// at its measured latency (its RTT until one is measured).
		score := time.Duration(hs.inflight+1) * max(hs.lat, hs.rtt)
		if g.cfg.Zone != "" && hs.zone != g.cfg.Zone {
			score += hs.rtt / 2
		}
		if hs.goneLocked() {
			score += 2 * time.Hour
		} else if hs.demoted {
			score += time.Hour
		} else if !hs.suspectUntil.IsZero() && time.Now().Before(hs.suspectUntil) { // no clock read per candidate otherwise
			score += time.Minute
		}
		if score < bestScore {
			best, bestScore = p, score
		}
	}
	return best
}

func (hs *holderStats) goneLocked() bool { return hs.failStreak >= holderRounds }

// peerInfoTTL is how long a holder's RTT and zone are reused before being
// asked of the node again: scoring runs for every prefetch candidate.
const peerInfoTTL = time.Second

func (g *Gatherer) refreshPeerLocked(p string, hs *holderStats) {
	if now := time.Now(); now.Sub(hs.infoAt) > peerInfoTTL {
		rtt, ok := g.net.RTT(p)
		if !ok {
			rtt = 50 * time.Millisecond // unmeasured: assume far
		}
		hs.rtt, hs.zone, hs.infoAt = rtt, g.net.Zone(p), now
	}
}

// holder returns p's statistics, creating them.
func (g *Gatherer) holder(p string) *holderStats {
	hs := g.peers[p]
	if hs == nil {
		hs = &holderStats{}
		g.peers[p] = hs
	}
	return hs
}

func (g *Gatherer) recordLatencyLocked(p string, d time.Duration) {
	hs := g.holder(p)
	if hs.lat == 0 {
		hs.lat = d
	} else {
		hs.lat = (hs.lat*4 + d) / 5
	}
	if len(hs.latency) < 1<<14 {
		hs.latency = append(hs.latency, d)
	}
}

// getter returns the (shared) stream to p at a priority.
func (g *Gatherer) getter(ctx context.Context, p string, demand bool) (Getter, error) {
	g.mu.Lock()
	m, prio, window := g.prefetch, wire.Prefetch, g.cfg.PrefetchWindow
	if demand {
		m, prio, window = g.demand, wire.Demand, g.cfg.DemandWindow
	}
	if gs := m[p]; gs != nil {
		g.mu.Unlock()
		return gs, nil
	}
	g.mu.Unlock()
	gs, err := g.net.OpenGet(ctx, p, prio, window)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	old := m[p]
	if old == nil {
		m[p] = gs
	}
	g.mu.Unlock()
	if old != nil {
		// Another caller opened one first. Reset ours, outside the lock:
		// closing a stream never written to waits for a handshake the
		// peer will never answer.
		gs.Abort()
		return old, nil
	}
	return gs, nil
}

func (g *Gatherer) dropGetter(p string, gs Getter, demand bool) {
	g.mu.Lock()
	m := g.prefetch
	if demand {
		m = g.demand
	}
	if m[p] == gs {
		delete(m, p)
	}
	g.mu.Unlock()
	gs.Abort()
}

// fetchByID fetches one chunk from the best holder (demand) and hedges to
// the next one if it is slow.
func (g *Gatherer) fetchByID(f *flight, demand bool) {
	if demand {
		g.spawn(func() { g.hedgeLater(f) })
	}
	g.tryHolder(f, demand)
}

// holderRounds is how many times every holder is tried for a chunk before
// it counts as unavailable; a holder that answered "missing" or served
// wrong bytes is not asked again (avoid), one that timed out may be.
const holderRounds = 3

// tryHolder asks the best untried holder for f; on failure it moves on to
// the next, then to the source by position while it still serves.
func (g *Gatherer) tryHolder(f *flight, demand bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	round := 1
	for {
		g.mu.Lock()
		if f.done {
			g.mu.Unlock()
			return
		}
		p := g.pickHolderLocked(f.id, f.tried, nil)
		if p == "" && round < holderRounds && len(f.tried) > 0 {
			round++
			clear(f.tried)
			g.mu.Unlock()
			select {
			case <-time.After(time.Duration(round) * 50 * time.Millisecond):
			case <-g.done:
				return
			}
			continue
		}
		if p == "" {
			g.flightFailedLocked(f)
			g.mu.Unlock()
			return
		}
		f.tried[p] = true
		g.holder(p).inflight++
		g.mu.Unlock()

		err := g.getOne(ctx, p, f, demand)
		g.mu.Lock()
		g.holder(p).inflight--
		g.mu.Unlock()
		if err == nil {
			return
		}
		g.log.Debug("fetch from holder failed; trying the next", "peer", p, "chunk", f.id.Short(), "err", err)
	}
}

// hedgeLater asks a second holder if a demand read is still waiting after
// twice the usual latency.
func (g *Gatherer) hedgeLater(f *flight) {
	g.mu.Lock()
	wait := g.cfg.HedgeAfter
	for _, p := range g.in.Holders(f.id) {
		if hs := g.peers[p]; hs != nil && 2*hs.lat > wait {
			wait = 2 * hs.lat
		}
	}
	g.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-g.done:
		return
	}
	g.mu.Lock()
	if f.done || f.hedged {
		g.mu.Unlock()
		return
	}
	f.hedged = true
	g.st.Hedged++
	g.mu.Unlock()
	g.tryHolder(f, true)
}

// getOne fetches f.id from p and delivers it.
func (g *Gatherer) getOne(ctx context.Context, p string, f *flight, demand bool) error {
	gs, err := g.getter(ctx, p, demand)
	if err != nil {
		return err
	}
	type answer struct {
		res  wire.GetResult
		data []byte
		err  error
	}
	ch := make(chan answer, 1)
	start := time.Now()
	if err := gs.Get(ctx, []chunk.ID{f.id}, func(rs []wire.GetResult, err error) {
		if err != nil {
			ch <- answer{err: err}
			return
		}
		ch <- answer{res: rs[0], data: slices.Clone(rs[0].Data)}
	}); err != nil {
		g.dropGetter(p, gs, demand)
	}
	a := <-ch
	if a.err != nil {
		return a.err
	}
	if a.res.Status != wire.StatusOK {
		g.mu.Lock()
		g.avoidLocked(f.id, p)
		if a.res.Status == wire.StatusBadHash {
			g.holder(p).demoted = true
		}
		g.mu.Unlock()
		if a.res.Status == wire.StatusBadHash {
			g.log.Warn("holder served wrong bytes; demoted", "peer", p, "chunk", f.id.Short())
		}
	}
	if a.res.Status != wire.StatusOK {
		return fmt.Errorf("%s: %s", p, a.res.Status)
	}
	g.mu.Lock()
	if f.done {
		g.mu.Unlock()
		return nil // the other leg of a hedge won
	}
	f.done = true // deliver removes the flight once the bytes are written
	g.recordLatencyLocked(p, time.Since(start))
	g.st.FetchedBytes[p] += int64(len(a.data))
	if g.cfg.Intake != nil {
		g.cfg.Intake.Charge(len(a.data)) // a guest's read never waits for the cap
	}
	if demand || f.demand {
		g.st.DemandChunks++
	} else {
		g.st.PrefetchChunks++
	}
	g.mu.Unlock()
	g.keep(f.id, a.data)
	if err := g.deliver(f.id, a.data, nil); err != nil {
		g.mu.Lock()
		g.failLocked(err)
		g.mu.Unlock()
	}
	return nil
}

func (g *Gatherer) avoidLocked(id chunk.ID, p string) {
	if g.avoid[id] == nil {
		g.avoid[id] = map[string]bool{}
	}
	if !g.avoid[id][p] {
		g.st.Retried++
	}
	g.avoid[id][p] = true
}

// unavailableLocked handles a chunk every holder failed to provide.
func (g *Gatherer) unavailableLocked(id chunk.ID) {
	f := g.flights[id]
	if f == nil {
		f = &flight{id: id, tried: map[string]bool{}}
		g.flights[id] = f
	}
	g.flightFailedLocked(f)
}

// flightFailedLocked handles a chunk no holder could provide: positions of
// it still served by the source are demand-read by position.
func (g *Gatherer) flightFailedLocked(f *flight) {
	if f.done {
		return
	}
	f.done = true
	delete(g.flights, f.id)
	if !g.finished {
		for _, at := range g.positions[f.id] {
			if !g.present[at.Region][at.Index] && !g.posFlights[at] {
				g.posFlights[at] = true
				g.spawn(func() { g.demandFromSource(at) })
			}
		}
		return
	}
	if g.rebuildLocked(f.id) {
		return
	}
	g.failLocked(fmt.Errorf("chunk %s: %w: %w", f.id, ErrUnavailable, ErrGatherFailed))
}

// copyNow materializes one position from the local store for a demand
// read; if the store no longer has it, the read is fetched like any other.
func (g *Gatherer) copyNow(at Position, id chunk.ID) {
	data, err := g.store.Get(id, nil)
	if err == nil && chunk.Verify(id, data) {
		g.mu.Lock()
		g.st.LocalChunks++
		g.mu.Unlock()
		g.store.Pin(g.in.ID.String(), id)
		if err := g.deliver(id, data, &at); err != nil {
			g.mu.Lock()
			g.failLocked(err)
			g.mu.Unlock()
		}
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.present[at.Region][at.Index] || g.flights[id] != nil {
		return
	}
	f := &flight{id: id, demand: true, tried: map[string]bool{}}
	g.flights[id] = f
	g.spawn(func() { g.fetchByID(f, true) })
}
