package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/wire"
)

// Demander reads chunks by position from a migration's source.
type Demander interface {
	// Demand asks for one position; done is called exactly once.
	Demand(ctx context.Context, d wire.DemandReq, done func(wire.Status, []byte, error)) error
	Close() error
	Abort()
}

// GatherNet is what a gather needs from the network (the daemon adapts
// node.Node to it).
type GatherNet interface {
	Network
	OpenDemand(ctx context.Context, peer string, window int) (Demander, error)
	// RTT is the moving-average round trip to peer; ok is false if unknown.
	RTT(peer string) (time.Duration, bool)
	// Zone is peer's locality label, "" if unknown.
	Zone(peer string) string
	// Release tells peer the migration is complete and which chunks it held.
	Release(ctx context.Context, peer string, r wire.Release) error
}

// GatherStore is the local chunk store (chunkstore.Store).
type GatherStore interface {
	Has(id chunk.ID) bool
	Get(id chunk.ID, dst []byte) ([]byte, error)
	Put(id chunk.ID, data []byte) error
	Pinner
}

// GatherConfig configures a gather.
type GatherConfig struct {
	Dir      string // regions are materialized as Dir/<region>.img
	Zone     string // this node's zone: holders in it are preferred
	Prefetch bool   // false: fetch only what is read (the baseline)

	PrefetchBatch  int // chunks per prefetch request
	PrefetchWindow int // prefetch requests in flight per holder
	DemandWindow   int // demand requests in flight per holder
	Bubble         int // chunks on each side of a fault prefetched first
	RecentFaults   int // faults remembered for bubbling

	// HedgeAfter is the least wait before a demand read is also asked of
	// a second holder; the usual wait is twice the holder's latency.
	HedgeAfter time.Duration
	// WorkingSet lists positions (recorded from an earlier run of the VM)
	// prefetched before anything else.
	WorkingSet []Position

	// NoRelease keeps the holders' copies when the gather completes (a
	// gather of an existing manifest must not free what others may use).
	NoRelease bool
	// StillNeeded reports whether another gather on this node still needs
	// a chunk, so releasing this one does not free it at the holders.
	StillNeeded func(chunk.ID) bool
	Log         *slog.Logger
}

// Position is one chunk of one region.
type Position struct {
	Region int
	Index  uint64
}

// DefaultGatherConfig prefetches in batches of 64 chunks, 4 deep per holder,
// bubbling 32 chunks around the last 16 faults.
func DefaultGatherConfig(dir string) GatherConfig {
	return GatherConfig{Dir: dir, Prefetch: true, PrefetchBatch: 64, PrefetchWindow: 4, DemandWindow: 32,
		Bubble: 32, RecentFaults: 16, HedgeAfter: 20 * time.Millisecond}
}

// ErrGatherFailed means a chunk could not be had from anyone.
var ErrGatherFailed = errors.New("gather failed")

// Gatherer brings one incoming migration's VM here: it serves reads of any
// byte at once (ReadAt blocks only for chunks not yet here, and fetches
// them ahead of everything else), prefetches the rest, and writes every
// region to a local file. Placements come in through Placed and Finished.
type Gatherer struct {
	cfg   GatherConfig
	in    *Incoming
	net   GatherNet
	store GatherStore
	log   *slog.Logger

	files []*os.File
	paths []string

	mu         sync.Mutex
	present    [][]bool
	nPresent   int64
	nTotal     int64
	known      [][]chunk.ID              // ID per position once placed or in the manifest
	positions  map[chunk.ID][]Position   // every known position of each ID
	waiters    map[Position][]chan error // ReadAt callers waiting for a position
	flights    map[chunk.ID]*flight
	posFlights map[Position]bool
	avoid      map[chunk.ID]map[string]bool // holders that failed to provide a chunk
	afterMap   []Position                   // reads to retry once the manifest is resolved
	local      []Position                   // placed positions whose chunk is in the local store
	recent     []Position
	cursor     Position
	finished   bool // the manifest is known: every ID is
	failed     error
	completeAt time.Time
	wake       chan struct{} // capacity 1: the prefetcher has something to look at
	done       chan struct{} // closed on completion or failure

	// Every goroutine the gather starts goes through spawn, and Run waits
	// for them all before it returns.
	spawnMu sync.Mutex
	closing bool
	wg      sync.WaitGroup

	demand   map[string]Getter // per holder, demand priority
	prefetch map[string]Getter
	source   Demander
	peers    map[string]*holderStats

	st Report
}

type flight struct {
	id      chunk.ID
	demand  bool
	tried   map[string]bool
	started time.Time
	hedged  bool
	done    bool
}

type holderStats struct {
	inflight int   // requests outstanding (all priorities)
	bytes    int64 // chunk bytes fetched from it
	latency  []time.Duration
	lat      time.Duration // EWMA of request latency
	demoted  bool          // served a chunk that did not match its ID
	failures int
}

// Report is what a gather measured.
type Report struct {
	VM              string
	TMT             time.Duration            // open to every chunk here
	FirstDemand     time.Duration            // open to the first demand read served
	DemandReads     int64                    // chunk reads through ReadAt
	DemandHits      int64                    // of them, already here
	NetworkFaults   int64                    // of them, that waited for the network
	LocalChunks     int64                    // chunks copied from the local store (this VM or another)
	PrefetchChunks  int64                    // chunks brought by prefetch
	DemandChunks    int64                    // chunks brought by demand
	Hedged          int64                    // demand reads also asked of a second holder
	SourceChunks    int64                    // chunks read by position from the source
	FetchedBytes    map[string]int64         // per holder (and the source)
	LatencyP50      map[string]time.Duration // demand latency per holder
	LatencyP99      map[string]time.Duration
	Paths           []string
	Complete        bool
	Err             string
	ChunksTotal     int64
	ChunksPresent   int64
	ReleasedHolders int
}

// NewGatherer prepares the files of an incoming migration. Call Run to
// start prefetching; ReadAt works from now on.
func NewGatherer(in *Incoming, net GatherNet, store GatherStore, cfg GatherConfig) (*Gatherer, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("gather %s: %w", in.VM, err)
	}
	g := &Gatherer{cfg: cfg, in: in, net: net, store: store, log: cfg.Log,
		positions: map[chunk.ID][]Position{}, waiters: map[Position][]chan error{},
		flights: map[chunk.ID]*flight{}, posFlights: map[Position]bool{}, avoid: map[chunk.ID]map[string]bool{},
		wake: make(chan struct{}, 1), done: make(chan struct{}),
		demand: map[string]Getter{}, prefetch: map[string]Getter{}, peers: map[string]*holderStats{},
		st: Report{VM: in.VM, FetchedBytes: map[string]int64{}}}
	for _, r := range in.Regions {
		p := filepath.Join(cfg.Dir, r.Name+".img")
		f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
		if err == nil {
			err = f.Truncate(int64(r.Size)) // zero chunks stay holes
		}
		if err != nil {
			g.closeFiles()
			return nil, fmt.Errorf("gather %s: %w", in.VM, err)
		}
		n := (r.Size + uint64(r.ChunkSize) - 1) / uint64(r.ChunkSize)
		g.files, g.paths = append(g.files, f), append(g.paths, p)
		g.present = append(g.present, make([]bool, n))
		g.known = append(g.known, make([]chunk.ID, n))
		g.nTotal += int64(n)
	}
	g.st.Paths = g.paths
	g.st.ChunksTotal = g.nTotal
	return g, nil
}

// Paths are the materialized region files, in region order.
func (g *Gatherer) Paths() []string { return g.paths }

// Regions describes the regions.
func (g *Gatherer) Regions() []wire.RegionInfo { return g.in.Regions }

// Done is closed when the gather has completed or failed.
func (g *Gatherer) Done() <-chan struct{} { return g.done }

func (g *Gatherer) closeFiles() {
	for _, f := range g.files {
		f.Close()
	}
}

// spawn runs f in a goroutine owned by the gather, unless it is shutting down.
func (g *Gatherer) spawn(f func()) {
	g.spawnMu.Lock()
	defer g.spawnMu.Unlock()
	if g.closing {
		return
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		f()
	}()
}

// stopAll resets every stream (outstanding requests fail at once) and
// waits for every goroutine of the gather.
func (g *Gatherer) stopAll() {
	g.spawnMu.Lock()
	g.closing = true
	g.spawnMu.Unlock()
	g.mu.Lock()
	for _, m := range []map[string]Getter{g.demand, g.prefetch} {
		for p, gs := range m {
			gs.Abort()
			delete(m, p)
		}
	}
	if g.source != nil {
		g.source.Abort()
		g.source = nil
	}
	g.mu.Unlock()
	g.wg.Wait()
}

func (g *Gatherer) poke() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// Placed learns where chunks are (from the source's placement stream).
func (g *Gatherer) Placed(ps []wire.Placement) {
	g.mu.Lock()
	for _, p := range ps {
		at := Position{int(p.Region), p.Index}
		if int(p.Region) >= len(g.known) || p.Index >= uint64(len(g.known[p.Region])) {
			continue // Incomings has already refused it
		}
		g.learnLocked(at, p.ID)
	}
	g.mu.Unlock()
	g.poke()
}

// learnLocked records the ID at a position; a chunk already here (in the
// local store, or at another position) is copied without the network.
func (g *Gatherer) learnLocked(at Position, id chunk.ID) {
	if !g.known[at.Region][at.Index].IsZero() {
		return
	}
	g.known[at.Region][at.Index] = id
	if id.IsZero() {
		return
	}
	g.positions[id] = append(g.positions[id], at)
	if !g.present[at.Region][at.Index] {
		g.local = append(g.local, at) // checked against the store by the prefetcher
	}
}

// Finished learns the manifest: every position's ID, zero chunks included.
func (g *Gatherer) Finished(root chunk.ID) {
	g.spawn(func() { g.resolve(root) })
}

func (g *Gatherer) resolve(root chunk.ID) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The manifest's chunks are not placed like data: ask every holder of
	// the migration (it is usually in the local store already).
	var holders []Holder
	for _, p := range g.in.Peers() {
		rtt, _ := g.net.RTT(p)
		holders = append(holders, Holder{Peer: p, RTT: rtt})
	}
	m, ids, err := ResolveManifest(ctx, g.net, holders, g.store, root)
	if err == nil && len(m.Regions) != len(g.in.Regions) {
		err = fmt.Errorf("manifest has %d regions, migration %d: %w", len(m.Regions), len(g.in.Regions), manifest.ErrMalformed)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil {
		g.failLocked(fmt.Errorf("resolve manifest %s: %w", root, err))
		return
	}
	for r := range ids {
		if len(ids[r]) != len(g.known[r]) {
			g.failLocked(fmt.Errorf("manifest region %d has %d chunks, migration %d: %w", r, len(ids[r]), len(g.known[r]), ErrGatherFailed))
			return
		}
		for i, id := range ids[r] {
			at := Position{r, uint64(i)}
			if k := g.known[r][i]; !k.IsZero() && k != id {
				g.log.Warn("placement disagrees with manifest; using the manifest", "vm", g.in.VM, "region", r, "index", i)
				g.known[r][i] = chunk.ID{}
			}
			if id.IsZero() {
				g.markPresentLocked(at, nil) // a hole in the sparse file
				continue
			}
			g.learnLocked(at, id)
		}
	}
	g.finished = true
	for _, at := range g.afterMap {
		if !g.present[at.Region][at.Index] {
			g.startDemandLocked(at)
		}
	}
	g.afterMap = nil
	g.checkCompleteLocked()
	g.poke()
}

// markPresentLocked records that a position's bytes are in its file (or,
// for a nil chunk, that it is a zero hole) and wakes its readers.
func (g *Gatherer) markPresentLocked(at Position, _ []byte) {
	if g.present[at.Region][at.Index] {
		return
	}
	g.present[at.Region][at.Index] = true
	g.nPresent++
	for _, w := range g.waiters[at] {
		w <- nil
	}
	delete(g.waiters, at)
}

// deliver writes a chunk to every known position of id (and to at, for a
// positional read) and marks them present.
func (g *Gatherer) deliver(id chunk.ID, data []byte, at *Position) error {
	g.mu.Lock()
	targets := slices.Clone(g.positions[id])
	if at != nil && !slices.Contains(targets, *at) {
		targets = append(targets, *at)
	}
	var todo []Position
	for _, p := range targets {
		if !g.present[p.Region][p.Index] {
			todo = append(todo, p)
		}
	}
	g.mu.Unlock()
	for _, p := range todo {
		r := g.in.Regions[p.Region]
		off := int64(p.Index) * int64(r.ChunkSize)
		if want := min(int64(r.ChunkSize), int64(r.Size)-off); int64(len(data)) != want {
			return fmt.Errorf("chunk %s is %d bytes, position %d of %s needs %d: %w", id.Short(), len(data), p.Index, r.Name, want, ErrGatherFailed)
		}
		if _, err := g.files[p.Region].WriteAt(data, off); err != nil {
			return fmt.Errorf("write %s at %d: %w", r.Name, off, err)
		}
	}
	g.mu.Lock()
	for _, p := range todo {
		g.markPresentLocked(p, data)
	}
	// The flight ends only now that its bytes are in place, so nothing
	// picks the chunk again in between.
	if f := g.flights[id]; f != nil && f.done {
		delete(g.flights, id)
	}
	g.checkCompleteLocked()
	g.mu.Unlock()
	return nil
}

func (g *Gatherer) checkCompleteLocked() {
	if g.finished && g.nPresent == g.nTotal && g.completeAt.IsZero() && g.failed == nil {
		g.completeAt = time.Now()
		g.st.TMT = g.completeAt.Sub(g.in.Opened)
		close(g.done)
	}
}

func (g *Gatherer) failLocked(err error) {
	if g.failed != nil || !g.completeAt.IsZero() {
		return
	}
	g.failed = err
	g.log.Error("gather failed", "vm", g.in.VM, "err", err)
	for at, ws := range g.waiters {
		for _, w := range ws {
			w <- err
		}
		delete(g.waiters, at)
	}
	close(g.done)
}

// ReadAt reads region bytes, waiting for (and demand-fetching) any chunk
// not here yet. It is the one demand path: lazy views, the materializer
// and tests all read through it.
func (g *Gatherer) ReadAt(ctx context.Context, region int, p []byte, off int64) (int, error) {
	if region < 0 || region >= len(g.files) {
		return 0, fmt.Errorf("region %d: %w", region, ErrBadPlacement)
	}
	r := g.in.Regions[region]
	if off >= int64(r.Size) {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), int64(r.Size))
	cs := int64(r.ChunkSize)
	for idx := off / cs; idx*cs < end; idx++ {
		if err := g.ensure(ctx, Position{region, uint64(idx)}); err != nil {
			return 0, err
		}
	}
	n, err := g.files[region].ReadAt(p[:end-off], off)
	if err == nil && int64(n) < int64(len(p)) {
		err = io.EOF
	}
	return n, err
}

// WriteAt writes region bytes locally (a VM running here writes to its own
// copy; nothing goes back to the network). The chunks it touches are
// brought here first so a partial write never mixes with a later fetch.
func (g *Gatherer) WriteAt(ctx context.Context, region int, p []byte, off int64) (int, error) {
	if region < 0 || region >= len(g.files) {
		return 0, fmt.Errorf("region %d: %w", region, ErrBadPlacement)
	}
	r := g.in.Regions[region]
	if off+int64(len(p)) > int64(r.Size) {
		return 0, fmt.Errorf("write past the end of %s", r.Name)
	}
	cs := int64(r.ChunkSize)
	for idx := off / cs; idx*cs < off+int64(len(p)); idx++ {
		if err := g.ensure(ctx, Position{region, uint64(idx)}); err != nil {
			return 0, err
		}
	}
	return g.files[region].WriteAt(p, off)
}

// ensure returns once the position is here, demand-fetching it if needed.
func (g *Gatherer) ensure(ctx context.Context, at Position) error {
	g.mu.Lock()
	g.st.DemandReads++
	if g.present[at.Region][at.Index] {
		g.st.DemandHits++
		g.mu.Unlock()
		return nil
	}
	if g.failed != nil {
		err := g.failed
		g.mu.Unlock()
		return err
	}
	w := make(chan error, 1)
	g.waiters[at] = append(g.waiters[at], w)
	g.noteFaultLocked(at)
	g.startDemandLocked(at)
	g.mu.Unlock()
	g.poke()
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
		g.local = append(g.local, at) // copied by the run loop, no network
		return
	}
	if f := g.flights[id]; f != nil {
		if !f.demand {
			f.demand = true // a prefetch is already bringing it: wait, and hedge if slow
			g.spawn(func() { g.hedgeLater(f) })
		}
		return
	}
	f := &flight{id: id, demand: true, tried: map[string]bool{}, started: time.Now()}
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
		if g.source == nil {
			g.source = d
		} else {
			d.Close()
		}
		src = g.source
		g.mu.Unlock()
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
	id := chunk.Sum(a.data) // the source is authoritative for its own positions
	g.mu.Lock()
	g.st.SourceChunks++
	g.st.DemandChunks++
	g.st.FetchedBytes[g.in.Source] += int64(len(a.data))
	g.recordLatencyLocked(g.in.Source, time.Since(start))
	g.mu.Unlock()
	g.keep(id, a.data)
	return g.deliver(id, a.data, &at)
}

// keep stores a fetched chunk locally, pinned for the migration, so other
// VMs gathered on this host find it here. Best effort: a full store is fine.
func (g *Gatherer) keep(id chunk.ID, data []byte) {
	if g.store.Put(id, data) == nil {
		g.store.Pin(g.in.ID.String(), id)
	}
}

// pickHolder chooses where to fetch id from: the nearest (RTT, then zone)
// and least loaded holder not yet tried and not demoted.
func (g *Gatherer) pickHolderLocked(id chunk.ID, tried map[string]bool) string {
	best, bestScore := "", time.Duration(1<<62)
	for _, p := range g.in.Holders(id) {
		if tried[p] || g.avoid[id][p] {
			continue
		}
		hs := g.holder(p)
		rtt, ok := g.net.RTT(p)
		if !ok {
			rtt = 50 * time.Millisecond
		}
		score := rtt + time.Duration(hs.inflight)*max(hs.lat, rtt)/4
		if g.cfg.Zone != "" && g.net.Zone(p) != g.cfg.Zone {
			score += rtt / 2
		}
		if hs.demoted {
			score += time.Hour
		}
		if score < bestScore {
			best, bestScore = p, score
		}
	}
	return best
}

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
	defer g.mu.Unlock()
	if old := m[p]; old != nil {
		gs.Close()
		return old, nil
	}
	m[p] = gs
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

// maxPrefetchBytes caps one prefetch request's answer (the holder's frame
// cap is 8 MiB; 1 MiB keeps demand answers from waiting long behind it).
const maxPrefetchBytes = 1 << 20

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
		p := g.pickHolderLocked(f.id, f.tried)
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
	g.holder(p).bytes += int64(len(a.data))
	g.st.FetchedBytes[p] += int64(len(a.data))
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
	g.failLocked(fmt.Errorf("chunk %s: no holder could provide it: %w", f.id, ErrGatherFailed))
}

// Run prefetches until every chunk is here, then releases the holders. It
// returns nil once complete, or the error that failed the gather.
func (g *Gatherer) Run(ctx context.Context) error {
	defer g.stopAll()
	for {
		g.copyLocal()
		if g.cfg.Prefetch {
			g.prefetchRound(ctx)
		}
		select {
		case <-g.done:
			g.mu.Lock()
			err := g.failed
			g.mu.Unlock()
			if err != nil {
				return err
			}
			for _, f := range g.files {
				if err := f.Sync(); err != nil {
					return fmt.Errorf("sync %s: %w", f.Name(), err)
				}
			}
			g.stopAll() // nothing is in flight while holders free their copies
			if !g.cfg.NoRelease {
				g.release(ctx)
			} else {
				g.store.Unpin(g.in.ID.String())
			}
			return nil
		case <-ctx.Done():
			g.mu.Lock()
			g.failLocked(ctx.Err())
			g.mu.Unlock()
			return ctx.Err()
		case <-g.wake:
		case <-time.After(50 * time.Millisecond): // completions free prefetch slots
		}
		g.mu.Lock()
		more := len(g.local) > 0
		g.mu.Unlock()
		if more {
			g.poke()
		}
	}
}

// copyLocal materializes placed positions whose chunk is already in the
// local store: pushed here during the scatter, or from another VM.
func (g *Gatherer) copyLocal() {
	g.mu.Lock()
	todo := g.local
	g.local = nil
	g.mu.Unlock()
	var buf []byte
	for _, at := range todo {
		g.mu.Lock()
		id := g.known[at.Region][at.Index]
		done := g.present[at.Region][at.Index]
		g.mu.Unlock()
		if done || id.IsZero() {
			continue
		}
		var err error
		if buf, err = g.store.Get(id, buf); err != nil || !chunk.Verify(id, buf) {
			// Not in the store (it may be full): another position of ours
			// may hold it already. Else prefetch will fetch it.
			if buf, err = g.readPresent(id, buf); err != nil {
				continue
			}
		}
		g.store.Pin(g.in.ID.String(), id)
		g.mu.Lock()
		g.st.LocalChunks++
		g.mu.Unlock()
		if err := g.deliver(id, buf, &at); err != nil {
			g.mu.Lock()
			g.failLocked(err)
			g.mu.Unlock()
			return
		}
	}
}

// readPresent reads id from a position of ours that already has it.
func (g *Gatherer) readPresent(id chunk.ID, buf []byte) ([]byte, error) {
	g.mu.Lock()
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
	buf = append(buf[:0], make([]byte, n)...)
	if _, err := g.files[from.Region].ReadAt(buf, off); err != nil {
		return buf, err
	}
	if !chunk.Verify(id, buf) {
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
		p := g.pickHolderLocked(id, nil)
		if p == "" {
			if len(g.avoid[id]) > 0 {
				g.unavailableLocked(id)
			}
			return skipped
		}
		reqs := byHolder[p]
		cs := int(g.in.Regions[at.Region].ChunkSize)
		if n := len(reqs); n == 0 || len(reqs[n-1]) >= g.cfg.PrefetchBatch || (len(reqs[n-1])+1)*cs > maxPrefetchBytes {
			if g.holder(p).inflight+n >= g.cfg.PrefetchWindow {
				return holderFull
			}
			reqs = append(reqs, nil)
		}
		f := &flight{id: id, tried: map[string]bool{p: true}, started: time.Now()}
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
	for scanned := int64(0); scanned < min(g.nTotal, int64(limit)*8) && budget < limit; scanned++ {
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
	type got struct {
		id   chunk.ID
		data []byte
	}
	var ok []got
	var bad []wire.GetResult // non-OK results, by position in ids
	fail := func(err error) {
		g.mu.Lock()
		g.holder(p).failures++
		g.mu.Unlock()
		g.log.Debug("prefetch failed", "peer", p, "err", err)
	}
	start := time.Now()
	gs, err := g.getter(ctx, p, false)
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
		err = <-ch
	}
	if err != nil {
		fail(err)
	}
	g.mu.Lock()
	g.holder(p).inflight--
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
				nf := &flight{id: f.id, demand: true, tried: map[string]bool{}, started: time.Now()}
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
		g.holder(p).bytes += int64(len(o.data))
		g.st.FetchedBytes[p] += int64(len(o.data))
		g.st.PrefetchChunks++
	}
	g.mu.Unlock()
	for _, o := range mine {
		g.keep(o.id, o.data)
		if err := g.deliver(o.id, o.data, nil); err != nil {
			g.mu.Lock()
			g.failLocked(err)
			g.mu.Unlock()
			return
		}
	}
	g.poke()
}

// release tells each holder which of the migration's chunks it held, so it
// can free them, and the source that the gather is complete. Chunks another
// gather on this node still needs are kept at the holders.
func (g *Gatherer) release(ctx context.Context) {
	g.mu.Lock()
	per := map[string][]chunk.ID{}
	for id := range g.positions {
		if g.cfg.StillNeeded != nil && g.cfg.StillNeeded(id) {
			continue
		}
		for _, p := range g.in.Holders(id) {
			per[p] = append(per[p], id)
		}
	}
	g.mu.Unlock()
	if _, ok := per[g.in.Source]; !ok {
		per[g.in.Source] = nil
	}
	released := 0
	for p, ids := range per {
		if err := g.net.Release(ctx, p, wire.Release{ID: g.in.ID, Chunks: ids}); err != nil {
			g.log.Warn("release holder", "peer", p, "err", err)
			continue
		}
		released++
	}
	g.store.Unpin(g.in.ID.String())
	g.mu.Lock()
	g.st.ReleasedHolders = released
	g.mu.Unlock()
}

// Report returns what the gather measured so far.
func (g *Gatherer) Report() Report {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.st
	r.FetchedBytes = maps(g.st.FetchedBytes)
	r.LatencyP50, r.LatencyP99 = map[string]time.Duration{}, map[string]time.Duration{}
	for p, hs := range g.peers {
		if len(hs.latency) == 0 {
			continue
		}
		l := slices.Clone(hs.latency)
		slices.Sort(l)
		r.LatencyP50[p] = l[len(l)/2]
		r.LatencyP99[p] = l[min(len(l)-1, len(l)*99/100)]
	}
	r.ChunksPresent = g.nPresent
	r.Complete = !g.completeAt.IsZero()
	if g.failed != nil {
		r.Err = g.failed.Error()
	}
	return r
}

func maps[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Close releases the gather's files (after Run has returned).
func (g *Gatherer) Close() error {
	g.stopAll()
	var errs []error
	for _, f := range g.files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}

// Needs reports whether this unfinished gather still needs chunk id.
func (g *Gatherer) Needs(id chunk.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.completeAt.IsZero() || g.failed != nil {
		return false
	}
	for _, p := range g.positions[id] {
		if !g.present[p.Region][p.Index] {
			return true
		}
	}
	return false
}

// RegionIO is one region's demand path, for lazy views.
type RegionIO struct {
	g      *Gatherer
	region int
}

// Region returns region i's demand path.
func (g *Gatherer) Region(i int) RegionIO { return RegionIO{g, i} }

// ReadAt reads through the gather (see Gatherer.ReadAt).
func (r RegionIO) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return r.g.ReadAt(ctx, r.region, p, off)
}

// WriteAt writes to the local copy (see Gatherer.WriteAt).
func (r RegionIO) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	return r.g.WriteAt(ctx, r.region, p, off)
}
