package fetch

import (
	"context"
	"errors"
	"fmt"
	"github.com/sgrelay/sg/internal/ratelimit"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/erasure"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/seal"
	"github.com/sgrelay/sg/internal/wire"
)

// Demander reads chunks by position from a migration's source.
type Demander interface {
	// Demand asks for one position; done is called exactly once.
	Demand(ctx context.Context, d wire.DemandReq, done func(wire.Status, []byte, error)) error
	Close() error
	Abort()
}

// GatherNet is what a gather needs from the network (cluster.Net adapts
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
	// Renew tells holder peer the migration is still being gathered, so
	// it keeps the migration's chunks for another lease.
	Renew(ctx context.Context, peer string, id wire.MigrationID) error
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
	// BulkDuringScatter prefetches everything in order, and copies pushed
	// chunks to the files, while the source is still scattering (not only
	// around faults): a shorter TMT when our downlink and CPU have room to
	// spare, a longer ET when they do not.
	BulkDuringScatter bool

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

	// Intake, if set, paces bulk prefetch (the node's intake cap, shared
	// with pushes); demand reads are counted against it but never wait.
	Intake *ratelimit.Limiter

	// Resume continues a gather interrupted by a restart in the same Dir:
	// the region files are kept, and a position whose bytes there already
	// hash to its chunk is present without a fetch (Report.KeptChunks).
	Resume bool

	// NoRelease keeps the holders' copies when the gather completes (a
	// gather of an existing manifest must not free what others may use).
	NoRelease bool
	// RenewEvery is how often the gather renews its holders' leases on
	// the migration's chunks while it runs (0: never). Keep it well under
	// the holders' lease.
	RenewEvery time.Duration
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
		Bubble: 32, RecentFaults: 16, HedgeAfter: 20 * time.Millisecond, RenewEvery: DefaultRenewEvery}
}

// DefaultRenewEvery renews holders' leases (a day by default) hourly.
const DefaultRenewEvery = time.Hour

// ErrGatherFailed means a chunk could not be had from anyone.
var ErrGatherFailed = errors.New("gather failed")

// ErrAbandoned fails a gather whose source gave the migration up before
// handing over its manifest: the VM stays (or runs on) at the source.
var ErrAbandoned = errors.New("the source abandoned the migration")

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

	dir   *os.Root // cfg.Dir: every file of the gather is opened through it
	files []*os.File
	paths []string

	mu         sync.Mutex
	root       chunk.ID   // the manifest, once resolved
	manifest   []chunk.ID // its root, block and key block chunks
	keepBuf    []byte     // keptLocked's read buffer
	present    [][]bool
	nPresent   int64
	nTotal     int64
	known      [][]chunk.ID              // ID per position once placed or in the manifest
	plains     map[chunk.ID]chunk.ID     // sealed migrations: sealed ID → plain ID (its key)
	openBufs   sync.Pool                 // *[]byte: sealed chunks opened for the files
	stripes    []manifest.Stripe         // erasure-coded migrations, once the manifest is known
	stripeOf   map[chunk.ID]int          // data chunk → its stripe
	rebuilding map[chunk.ID]bool         // chunks being decoded from their stripes
	code       erasure.Code              // decodes them
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
	closed     bool          // Close dropped the per-position state: reads fail with ErrClosed
	wake       chan struct{} // capacity 1: the prefetcher has something to look at
	done       chan struct{} // closed on completion or failure

	// Every goroutine the gather starts goes through spawn, and Run waits
	// for them all before it returns; stopCtx ends with stopAll.
	spawnMu      sync.Mutex
	closing      bool
	wg           sync.WaitGroup
	stopCtx      context.Context
	stop         context.CancelFunc
	rebuildSlots chan struct{}

	demand   map[string]Getter // per holder, demand priority
	prefetch map[string]Getter
	source   Demander
	peers    map[string]*holderStats

	st Report
}

type flight struct {
	id     chunk.ID
	demand bool
	tried  map[string]bool
	hedged bool
	done   bool
}

type holderStats struct {
	inflight int // requests outstanding (all priorities)
	latency  []time.Duration
	lat      time.Duration // EWMA of request latency
	demoted  bool          // served a chunk that did not match its ID
	// suspectUntil: a prefetch from it failed or stalled; others first.
	suspectUntil time.Time
	// failStreak counts its prefetch requests failed in a row; at
	// holderRounds it is gone: asked only for chunks nobody else holds
	// and that cannot be decoded from their stripes.
	failStreak int
	rtt        time.Duration // from the node, cached for peerInfoTTL
	zone       string
	infoAt     time.Time
}

// Report is what a gather measured.
type Report struct {
	VM             string
	TMT            time.Duration // open to every chunk here
	FirstDemand    time.Duration // open to the first demand read served
	DemandReads    int64         // chunk reads through ReadAt
	DemandHits     int64         // of them, already here
	NetworkFaults  int64         // of them, that waited for the network
	LocalChunks    int64         // chunks copied from the local store (this VM or another)
	KeptChunks     int64         // resumed gather: chunks already in the files, not fetched
	RebuiltChunks  int64         // decoded from their stripes: no holder had them
	PrefetchChunks int64         // chunks brought by prefetch
	// PrefetchedDuringScatter is the bytes prefetched before the source
	// handed the manifest over: around guest faults, and all in order
	// when the source let the destination pull during the scatter.
	PrefetchedDuringScatter int64
	Pulled                  bool                     // the source let this destination pull during the scatter
	DemandChunks            int64                    // chunks brought by demand
	Hedged                  int64                    // demand reads also asked of a second holder
	Retried                 int64                    // chunks a holder lacked or served wrong, asked of another
	SourceChunks            int64                    // chunks read by position from the source
	FetchedBytes            map[string]int64         // per holder (and the source)
	LatencyP50              map[string]time.Duration // demand latency per holder
	LatencyP99              map[string]time.Duration
	Paths                   []string
	Complete                bool
	Err                     string
	ChunksTotal             int64
	ChunksPresent           int64
	ReleasedHolders         int
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
	// Region files are opened through the directory's root, so that no
	// region name, whatever it holds, reaches a file outside it.
	dir, err := os.OpenRoot(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("gather %s: %w", in.VM, err)
	}
	g := &Gatherer{cfg: cfg, in: in, dir: dir, net: net, store: store, log: cfg.Log,
		positions: map[chunk.ID][]Position{}, waiters: map[Position][]chan error{},
		flights: map[chunk.ID]*flight{}, posFlights: map[Position]bool{}, avoid: map[chunk.ID]map[string]bool{},
		wake: make(chan struct{}, 1), done: make(chan struct{}), rebuildSlots: make(chan struct{}, maxRebuilds),
		demand: map[string]Getter{}, prefetch: map[string]Getter{}, peers: map[string]*holderStats{},
		st: Report{VM: in.VM, FetchedBytes: map[string]int64{}}}
	for _, r := range in.Regions {
		name := r.Name + ".img"
		p := filepath.Join(cfg.Dir, name)
		flags := os.O_CREATE | os.O_RDWR | os.O_TRUNC
		if cfg.Resume {
			flags &^= os.O_TRUNC
		}
		f, err := dir.OpenFile(name, flags, 0o600)
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
	if in.Secret != (seal.Secret{}) {
		g.plains = map[chunk.ID]chunk.ID{}
		g.openBufs.New = func() any { return new([]byte) }
	}
	g.st.Paths = g.paths
	g.st.ChunksTotal = g.nTotal
	g.stopCtx, g.stop = context.WithCancel(context.Background())
	return g, nil
}

// fileIDLocked is the ID of the bytes that id's positions hold in the
// files: its plain ID if sealed.
func (g *Gatherer) fileIDLocked(id chunk.ID) chunk.ID {
	if g.plains != nil {
		return g.plains[id]
	}
	return id
}

// Paths are the materialized region files, in region order.
func (g *Gatherer) Paths() []string { return g.paths }

// Incoming is the migration being gathered.
func (g *Gatherer) Incoming() *Incoming { return g.in }

// Regions describes the regions.
func (g *Gatherer) Regions() []wire.RegionInfo { return g.in.Regions }

// Done is closed when the gather has completed or failed.
func (g *Gatherer) Done() <-chan struct{} { return g.done }

func (g *Gatherer) closeFiles() {
	for _, f := range g.files {
		f.Close()
	}
	g.dir.Close()
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
	g.stop()
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
		g.learnLocked(at, p.ID, p.Plain)
	}
	g.mu.Unlock()
	g.poke()
}

// learnLocked records the ID at a position (and for a sealed migration
// the plain ID that opens it); a chunk already here (in the local store,
// or at another position) is copied without the network.
func (g *Gatherer) learnLocked(at Position, id, plain chunk.ID) {
	if !g.known[at.Region][at.Index].IsZero() {
		return
	}
	g.known[at.Region][at.Index] = id
	if id.IsZero() {
		return
	}
	if g.plains != nil {
		g.plains[id] = plain
	}
	g.positions[id] = append(g.positions[id], at)
	if g.cfg.Resume && !g.present[at.Region][at.Index] && g.keptLocked(at, id) {
		g.st.KeptChunks++
		g.markPresentLocked(at, nil)
		return
	}
	if !g.present[at.Region][at.Index] && g.store.Has(id) {
		g.local = append(g.local, at) // copied by the run loop, never fetched
	}
}

// Abandoned fails the gather: its source gave the migration up, so the
// VM will never be complete here (and must not be run from it).
func (g *Gatherer) Abandoned(reason error) {
	g.mu.Lock()
	if !g.finished {
		g.failLocked(fmt.Errorf("%w: %w: %w", ErrGatherFailed, ErrAbandoned, reason))
	}
	g.mu.Unlock()
	g.poke()
}

// Finished learns the manifest: every position's ID, zero chunks included.
func (g *Gatherer) Finished(root chunk.ID) {
	g.spawn(func() { g.resolve(root) })
}

func (g *Gatherer) resolve(root chunk.ID) {
	ctx, cancel := context.WithTimeout(g.stopCtx, 5*time.Minute) // stopAll ends it
	defer cancel()
	// The manifest's chunks are not placed like data: ask every holder of
	// the migration (it is usually in the local store already).
	var holders []Holder
	for _, p := range g.in.Peers() {
		rtt, _ := g.net.RTT(p)
		holders = append(holders, Holder{Peer: p, RTT: rtt})
	}
	m, err := ResolveManifest(ctx, g.net, holders, g.store, root, g.in.Secret)
	if err == nil && len(m.Regions) != len(g.in.Regions) {
		err = fmt.Errorf("manifest has %d regions, migration %d: %w", len(m.Regions), len(g.in.Regions), manifest.ErrMalformed)
	}
	if err == nil && (m.Plains != nil) != (g.plains != nil) {
		err = fmt.Errorf("manifest sealed=%v, migration sealed=%v: %w", m.Sealed, g.plains != nil, manifest.ErrMalformed)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil {
		g.failLocked(fmt.Errorf("resolve manifest %s: %w", root, err))
		return
	}
	for r, ids := range m.IDs {
		if len(ids) != len(g.known[r]) {
			g.failLocked(fmt.Errorf("manifest region %d has %d chunks, migration %d: %w", r, len(ids), len(g.known[r]), ErrGatherFailed))
			return
		}
		for i, id := range ids {
			at := Position{r, uint64(i)}
			var plain chunk.ID
			if m.Plains != nil {
				plain = m.Plains[r][i]
			}
			if k := g.known[r][i]; !k.IsZero() && (k != id || g.plains != nil && g.plains[k] != plain) {
				g.log.Warn("placement disagrees with manifest; using the manifest", "vm", g.in.VM, "region", r, "index", i)
				g.known[r][i] = chunk.ID{}
			}
			if id.IsZero() {
				g.markPresentLocked(at, nil) // a hole in the sparse file
				continue
			}
			g.learnLocked(at, id, plain)
		}
	}
	g.learnStripesLocked(m.Stripes)
	g.manifest = append(g.manifest[:0], root)
	for _, r := range m.Regions {
		g.manifest = append(g.manifest, r.Blocks...)
		g.manifest = append(g.manifest, r.KeyBlocks...)
	}
	g.finished = true
	if err := g.saveState(root, false); err != nil {
		g.log.Warn("gather record not saved: this gather cannot resume after a restart", "vm", g.in.VM, "err", err)
	}
	g.root = root
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

// deliver writes a chunk (verified against id) to every known position
// of id (and to at, for a positional read) and marks them present. A
// sealed chunk is opened first; data is not modified.
func (g *Gatherer) deliver(id chunk.ID, data []byte, at *Position) error {
	g.mu.Lock()
	if g.plains != nil {
		plain, ok := g.plains[id]
		if !ok {
			g.mu.Unlock()
			return fmt.Errorf("sealed chunk %s: no plain ID known to open it: %w", id.Short(), ErrGatherFailed)
		}
		buf := g.openBufs.Get().(*[]byte)
		defer g.openBufs.Put(buf)
		*buf = slices.Grow((*buf)[:0], len(data))[:len(data)]
		seal.Chunk(*buf, data, plain)
		data = *buf
	}
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
	if err := g.ensureRange(ctx, region, off, end); err != nil {
		return 0, err
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
	if err := g.ensureRange(ctx, region, off, off+int64(len(p))); err != nil {
		return 0, err
	}
	return g.files[region].WriteAt(p, off)
}

// Run prefetches until every chunk is here, then releases the holders. It
// returns nil once complete, or the error that failed the gather.
func (g *Gatherer) Run(ctx context.Context) error {
	defer g.stopAll()
	if g.cfg.RenewEvery > 0 {
		renewCtx, stopRenew := context.WithCancel(ctx)
		var renewing sync.WaitGroup
		renewing.Go(func() { g.renewHolders(renewCtx) })
		defer func() { stopRenew(); renewing.Wait() }()
	}
	for {
		// Chunks pushed here wait in the store until the scatter ends:
		// copying them to the files meanwhile would take CPU and disk
		// from receiving, and so hold the source longer. Reads of them
		// are served at once all the same (ReadAt copies on demand).
		g.mu.Lock()
		copyNow := g.finished || g.cfg.BulkDuringScatter
		g.mu.Unlock()
		if copyNow {
			g.copyLocal()
		}
		if g.cfg.Prefetch {
			g.prefetchRound(ctx)
		}
		select {
		case <-g.done:
			g.mu.Lock()
			err := g.failed
			g.mu.Unlock()
			if err != nil {
				if errors.Is(err, ErrAbandoned) && !g.cfg.NoRelease {
					g.stopAll()
					g.releaseAbandoned(ctx)
				}
				return err
			}
			for _, f := range g.files {
				if err := f.Sync(); err != nil {
					return fmt.Errorf("sync %s: %w", f.Name(), err)
				}
			}
			g.mu.Lock()
			root := g.root
			g.mu.Unlock()
			if err := g.saveState(root, true); err != nil {
				g.log.Warn("gather record not marked complete", "vm", g.in.VM, "err", err)
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
		more := len(g.local) > 0 && (g.finished || g.cfg.BulkDuringScatter)
		g.mu.Unlock()
		if more {
			g.poke()
		}
	}
}

// renewHolders renews every holder's lease on the migration's chunks each
// RenewEvery until ctx ends: a gather that runs (or waits for its source)
// longer than a lease keeps its chunks.
func (g *Gatherer) renewHolders(ctx context.Context) {
	t := time.NewTicker(g.cfg.RenewEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, p := range g.in.Peers() {
			if err := g.net.Renew(ctx, p, g.in.ID); err != nil && ctx.Err() == nil {
				g.log.Warn("renew holder's lease", "peer", p, "err", err)
			}
		}
	}
}

// release tells each holder which of the migration's chunks it held, so it
// can free them, and the source that the gather is complete. Chunks another
// gather on this node still needs are kept at the holders.
func (g *Gatherer) release(ctx context.Context) {
	g.mu.Lock()
	ids := slices.Collect(maps.Keys(g.positions))
	// Parity chunks are not placed: whoever holds one frees it.
	var parity []chunk.ID
	for _, s := range g.stripes {
		parity = append(parity, s.Parity...)
	}
	g.mu.Unlock()
	// StillNeeded asks the other gathers on this node, each under its own
	// lock: never ask holding ours (two gathers completing at once would
	// each wait for the other's).
	per := map[string][]chunk.ID{}
	for _, id := range ids {
		if g.cfg.StillNeeded != nil && g.cfg.StillNeeded(id) {
			continue
		}
		for _, p := range g.in.Holders(id) {
			per[p] = append(per[p], id)
		}
	}
	if len(parity) > 0 {
		for _, p := range g.in.Peers() {
			per[p] = append(per[p], parity...)
		}
	}
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

// abandonedReleaseTimeout bounds the releases of an abandoned migration:
// a holder that does not answer keeps its copies until their lease ends,
// rather than holding up the migration's teardown.
const abandonedReleaseTimeout = 5 * time.Second

// releaseAbandoned tells every holder the source named that the
// migration will never be gathered: the VM stays at its source, and what
// was pushed for it is worth nothing. Only this node, the destination, may
// say so; holders the source never named keep their copies until their
// lease ends. The holders are asked at once, each bounded in time.
func (g *Gatherer) releaseAbandoned(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, abandonedReleaseTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range g.in.Peers() {
		if p == g.in.Source {
			continue // it gave the migration up: nothing of it is held there for us
		}
		wg.Go(func() {
			if err := g.net.Release(ctx, p, wire.Release{ID: g.in.ID}); err != nil {
				g.log.Warn("release an abandoned migration's holder", "peer", p, "err", err)
			}
		})
	}
	wg.Wait()
}

// Err is why the gather failed (nil while it runs or once complete).
func (g *Gatherer) Err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.failed
}

// Report returns what the gather measured so far.
func (g *Gatherer) Report() Report {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.st
	r.FetchedBytes = maps.Clone(g.st.FetchedBytes)
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
	r.ChunksPresent, r.Pulled = g.nPresent, g.in.PullDuringScatter
	r.Complete = !g.completeAt.IsZero()
	if g.failed != nil {
		r.Err = g.failed.Error()
	}
	return r
}

// ErrClosed answers reads of a gather that has been closed.
var ErrClosed = errors.New("gather closed")

// Close ends the gather (if it still runs), closes its files and drops
// its per-position state, so a retired migration holds no descriptor and
// no memory in proportion to its size; its Report stays readable. Reads
// after Close fail with ErrClosed.
func (g *Gatherer) Close() error {
	g.stopAll()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	g.failLocked(ErrClosed) // wakes any reader still waiting; a no-op once complete
	var errs []error
	for _, f := range g.files {
		errs = append(errs, f.Close())
	}
	errs = append(errs, g.dir.Close())
	g.present, g.known, g.plains, g.positions = nil, nil, nil, nil
	g.waiters, g.flights, g.posFlights, g.avoid = nil, nil, nil, nil
	g.stripes, g.stripeOf, g.rebuilding = nil, nil, nil
	g.afterMap, g.local, g.recent, g.keepBuf, g.manifest = nil, nil, nil, nil, nil
	g.peers = map[string]*holderStats{}
	return errors.Join(errs...)
}

// ChunkIDs lists the distinct chunks the gather placed (as stored: sealed
// IDs for a sealed migration) and, once resolved, its manifest's chunks;
// nil once closed.
func (g *Gatherer) ChunkIDs() []chunk.ID {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append(slices.Collect(maps.Keys(g.positions)), g.manifest...)
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
