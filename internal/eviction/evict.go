package eviction

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/seal"
	"github.com/sgrelay/sg/internal/wire"
)

// Cluster is what an eviction needs from the network. cluster.Net adapts
// node.Node to it; tests may plug in anything.
type Cluster interface {
	Network
	// Have asks peer which of ids it already holds.
	Have(ctx context.Context, peer string, ids []chunk.ID) ([]bool, error)
	// Capacity is what peer says it can still take.
	Capacity(ctx context.Context, peer string) (Capacity, error)
	// OpenMigration opens a migration at the destination.
	OpenMigration(ctx context.Context, dest string, o wire.Open) (Session, error)
}

// Capacity is what a target says it can take.
type Capacity struct {
	Free     int64 // bytes its store can still take
	Downlink int64 // bytes/s it can take in; 0: not said
	// Chunks is how many chunks it holds (-1: not said). A destination
	// that holds none is not asked which of the VM's it holds.
	Chunks int64
}

// Session is the control stream of one migration to its destination.
type Session interface {
	Holders(ctx context.Context, hs []wire.Holder) error
	Placements(ctx context.Context, ps []wire.Placement) error
	// PushPlacements places acknowledged pushes by their digests (unsealed
	// migrations): the destination asks the holders for the IDs.
	PushPlacements(ctx context.Context, pps []wire.PushPlacement) error
	// Done hands over the manifest root. With build, no copy of the
	// manifest was stored at the destination: it builds it from the
	// placements, or answers ErrManifestNeeded.
	Done(ctx context.Context, root chunk.ID, build bool) error
	// Cancel gives the migration up and waits for the destination's
	// acknowledgement (it has stopped what it started from it).
	Cancel(ctx context.Context, reason string) error
	Close() error
	Abort()
}

// Region is one piece of a VM's state, readable at any offset.
type Region struct {
	Name      string
	Kind      manifest.Kind
	Size      int64
	ChunkSize int
	Data      io.ReaderAt
}

// VM is one VM to evict.
type VM struct {
	Name    string
	Regions []Region
}

// Config configures an eviction.
type Config struct {
	Dest     string   // the destination peer
	Via      []string // intermediates (relays); ignored when Direct
	Replicas int      // holders each chunk needs before it counts (the destination counts)
	Direct   bool     // push to the destination only: the pre-/post-copy baseline
	MaxRate  int64    // bytes/s cap on the source's pushes; 0: none
	// Uplink is the source's uplink in bytes/s (0: not known). With it
	// and the downlinks the targets say, a fast destination may be told
	// to gather from the relays while the scatter runs (destMayPull).
	Uplink int64
	// Seal encrypts every chunk at rest (convergent encryption, see
	// internal/seal): holders store and serve only ciphertext, which
	// still dedups; only the destination can read it.
	Seal bool
	// Redundancy erasure-codes the distinct chunks instead of
	// replicating them (Replicas must be 1): see Redundancy.
	Redundancy Redundancy

	SpanBytes int // bytes read and hashed as one unit
	// BatchBytes is chunk bytes per push frame: the unit a target takes,
	// keeps in flight (at least two) and, at the end, is waited on for.
	// Small enough that a slow target's last batches drain in a few tens
	// of milliseconds (256 KiB at 130 Mbit/s: 16 ms; 1 MiB held the
	// source up to 64 ms longer), large enough that acknowledgements and
	// group commits stay a small share of the work.
	BatchBytes      int
	Hashers         int // hashing goroutines
	HaveWorkers     int // concurrent have queries to the destination
	DestStreams     int // push streams to the destination
	RelayStreams    int // push streams to each relay
	RelayBacklog    int // relays take batches only when this many wait (the destination is behind)
	PlacementBatch  int // placements per frame
	PlacementFlush  time.Duration
	SkipHaveQueries bool // do not ask the destination what it already holds
	// NoEndgame keeps idle targets from taking spare copies of batches
	// still in flight at the end (exact per-target accounting, slower end).
	NoEndgame bool
	// Unchanged, if set, is asked once everything is read and placed,
	// before any manifest is handed over: an error (an image that changed
	// while it was read) fails the eviction, and no destination is told
	// the VM is complete.
	Unchanged func() error

	Log *slog.Logger
}

// DefaultConfig returns settings for dest.
func DefaultConfig(dest string) Config {
	return Config{
		Dest: dest, Replicas: 1,
		SpanBytes: 1 << 20, BatchBytes: 256 << 10, Hashers: runtime.GOMAXPROCS(0), HaveWorkers: 8,
		DestStreams: 4, RelayStreams: 2, RelayBacklog: 2,
		PlacementBatch: 1024, PlacementFlush: 50 * time.Millisecond,
	}
}

// Options that Validate refuses together; a caller may explain them in
// its own terms.
var (
	ErrDirectReplicas     = errors.New("a direct eviction sends to the destination only, so it cannot keep more than one replica")
	ErrRedundancyConflict = errors.New("erasure coding spreads stripes over several targets: not with a direct eviction or replicas")
)

// Validate reports the first thing wrong with c.
func (c Config) Validate() error {
	switch {
	case c.Dest == "":
		return errors.New("no destination")
	case c.Replicas < 1:
		return fmt.Errorf("replicas %d: want at least 1", c.Replicas)
	case c.Direct && c.Replicas > 1:
		return ErrDirectReplicas
	case !c.Direct && c.Replicas > 1+len(c.Via):
		return fmt.Errorf("replicas %d needs at least %d intermediates, have %d", c.Replicas, c.Replicas-1, len(c.Via))
	case c.SpanBytes <= 0 || c.BatchBytes <= 0 || c.BatchBytes > wire.MaxFrameSize/2:
		return errors.New("span and batch sizes must be positive (batch ≤ 4 MiB)")
	case c.Hashers <= 0 || c.HaveWorkers <= 0 || c.DestStreams <= 0 || c.RelayStreams <= 0:
		return errors.New("worker and stream counts must be positive")
	case c.Uplink < 0:
		return fmt.Errorf("uplink %d: want bytes/s, 0 for unknown", c.Uplink)
	case c.MaxRate < 0:
		return errors.New("max rate is negative")
	}
	if c.Redundancy.On() {
		targets := 1 + len(c.Via)
		switch err := c.Redundancy.Validate(); {
		case err != nil:
			return err
		case c.Direct || c.Replicas > 1:
			return fmt.Errorf("redundancy %s: %w", c.Redundancy, ErrRedundancyConflict)
		case targets < c.Redundancy.Data+c.Redundancy.Parity:
			return fmt.Errorf("redundancy %s needs %d targets (the destination and %d intermediates), have %d",
				c.Redundancy, c.Redundancy.Data+c.Redundancy.Parity, c.Redundancy.Data+c.Redundancy.Parity-1, targets)
		}
	}
	for _, v := range c.Via {
		if v == c.Dest {
			return errors.New("the destination is listed as an intermediate")
		}
	}
	return nil
}

// Progress is reported while an eviction runs.
type Progress struct {
	BytesRead  int64            // of the VMs' images
	BytesTotal int64            // VM bytes in all
	UniqueDone int64            // unique chunk bytes fully acknowledged
	Sent       map[string]int64 // acknowledged bytes per target
	Elapsed    time.Duration
}

// VMResult is one VM's outcome.
type VMResult struct {
	Name          string
	MigrationID   wire.MigrationID
	Root          chunk.ID
	Bytes         int64
	Chunks        int64
	ZeroChunks    int64
	DupWithin     int64 // chunks equal to an earlier chunk of the same VM
	DupAcross     int64 // chunks first seen in another VM of this eviction
	ManifestBytes int64
	Secret        seal.Secret // sealed evictions: opens the manifest
	ParityChunks  int64       // erasure-coded evictions: parity chunks coded
	ParityBytes   int64
}

// Result describes a finished eviction.
type Result struct {
	VMs           []VMResult
	ET            time.Duration // eviction time: from start until nothing exists only here
	Bytes         int64         // VM bytes
	Chunks        int64
	ZeroChunks    int64
	DupWithin     int64
	DupAcross     int64
	AlreadyHeld   int64 // chunks the destination already had
	UniqueChunks  int64 // distinct non-zero chunks pushed
	UniqueBytes   int64 // their bytes
	ManifestBytes int64 // the manifests' size (one copy each; stored on as many targets as the data)
	// ManifestPushed is the manifest bytes pushed, every copy: a
	// destination that builds the manifest from the placements is sent
	// none (with one holder per chunk, nothing is).
	ManifestPushed int64
	ParityChunks   int64 // erasure-coded evictions: parity chunks coded
	ParityBytes    int64
	SentBytes      map[string]int64 // chunk bytes acknowledged per target
	Repaired       int64            // chunks pushed again after a relay was lost
	// EndgameBytes were pushed to a second target while the first still
	// had them in flight (spare copies that end the eviction sooner).
	EndgameBytes int64
	Replicas     int
	Redundancy   Redundancy
}

// EffectiveRate is VM bytes per second of ET.
func (r *Result) EffectiveRate() float64 { return float64(r.Bytes) / r.ET.Seconds() }

// WireRate is bytes pushed per second of ET.
func (r *Result) WireRate() float64 {
	var n int64
	for _, v := range r.SentBytes {
		n += v
	}
	return float64(n) / r.ET.Seconds()
}

// Eviction evicts one or more VMs together: they share one view of which
// chunks were already sent, so a chunk common to several travels once.
type Eviction struct {
	cfg Config
	cl  Cluster
	vms []vmState
	log *slog.Logger
}

type vmState struct {
	VM
	id      wire.MigrationID
	secret  seal.Secret  // sealed evictions: opens the manifest's key blocks
	ids     [][]chunk.ID // per region, per chunk: the manifest entries
	plains  [][]chunk.ID // sealed evictions: the plain IDs at the same positions
	stripes []manifest.Stripe
	img     *image // what the producer reads and fills: ids and plains are its
	res     VMResult
	session Session

	manifest   []manifest.Node // its tree, root last (built once every chunk is read)
	manifestAt []*target       // the targets storing it
}

// New prepares an eviction; each VM gets a fresh migration ID.
func New(cl Cluster, vms []VM, cfg Config) (*Eviction, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("evict: %w", err)
	}
	if len(vms) == 0 || len(vms) > wire.MaxHoldIDs {
		return nil, fmt.Errorf("evict: %d VMs (want 1..%d)", len(vms), wire.MaxHoldIDs)
	}
	e := &Eviction{cfg: cfg, cl: cl, log: cfg.Log}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	for _, v := range vms {
		if len(v.Regions) == 0 || len(v.Regions) > wire.MaxRegions {
			return nil, fmt.Errorf("evict %s: %d regions", v.Name, len(v.Regions))
		}
		st := vmState{VM: v, res: VMResult{Name: v.Name}}
		rand.Read(st.id[:])
		if cfg.Seal {
			rand.Read(st.secret[:])
			st.res.Secret = st.secret
		}
		st.res.MigrationID = st.id
		for _, r := range v.Regions {
			if r.ChunkSize <= 0 || r.ChunkSize > wire.MaxChunkSize || r.Size <= 0 {
				return nil, fmt.Errorf("evict %s: region %s: size %d, chunk size %d", v.Name, r.Name, r.Size, r.ChunkSize)
			}
			st.res.Bytes += r.Size
		}
		st.img = newImage(v.Name, v.Regions, cfg.Seal)
		st.ids, st.plains = st.img.ids, st.img.plains
		e.vms = append(e.vms, st)
	}
	return e, nil
}

// Dest is the destination peer: the only one served demand reads.
func (e *Eviction) Dest() string { return e.cfg.Dest }

// hold is what every push of this eviction says its chunks are for: its
// migrations, which only their destination may release or renew.
func (e *Eviction) hold() wire.Hold {
	return wire.Hold{Kind: wire.HoldMigration, IDs: e.MigrationIDs(), Dest: e.cfg.Dest}
}

// MigrationIDs lists the migrations this eviction opens, one per VM.
func (e *Eviction) MigrationIDs() []wire.MigrationID {
	out := make([]wire.MigrationID, len(e.vms))
	for i := range e.vms {
		out[i] = e.vms[i].id
	}
	return out
}

// ErrManifestNeeded is a destination's answer to a Done that asked it to
// build the manifest, when its placements do not build one with that
// root: the source stores the manifest there and says Done again.
var ErrManifestNeeded = errors.New("destination could not build the manifest from the placements")

// ErrImageChanged fails an eviction whose images changed while they were
// read: what was sent is no consistent VM.
var ErrImageChanged = errors.New("VM image changed during the eviction")

// ErrUnknownPosition is returned by ReadChunk for a position outside the VM.
var ErrUnknownPosition = errors.New("no such migration, region or chunk")

// ReadChunk reads the chunk at a position straight from the source's
// snapshot: the answer to a destination's demand read, served at once,
// whether or not the chunk has been placed yet.
func (e *Eviction) ReadChunk(id wire.MigrationID, region uint16, index uint64, dst []byte) ([]byte, error) {
	for i := range e.vms {
		v := &e.vms[i]
		if v.id != id {
			continue
		}
		if int(region) >= len(v.Regions) {
			return dst, ErrUnknownPosition
		}
		return readAt(v.Regions[region], index, dst)
	}
	return dst, ErrUnknownPosition
}

func readAt(r Region, index uint64, dst []byte) ([]byte, error) {
	off := int64(index) * int64(r.ChunkSize)
	if index >= uint64(r.Size) || off >= r.Size {
		return dst, ErrUnknownPosition
	}
	n := int(min(int64(r.ChunkSize), r.Size-off))
	dst = slices.Grow(dst[:0], n)[:n] // reuse the caller's buffer: no allocation per read
	if _, err := r.Data.ReadAt(dst, off); err != nil && !errors.Is(err, io.EOF) {
		return dst[:0], fmt.Errorf("read %s at %d: %w", r.Name, off, err)
	}
	return dst, nil
}

// Run evicts the VMs and returns once every non-zero chunk has the
// required holders and every manifest is stored at the destination.
// progress may be nil.
func (e *Eviction) Run(ctx context.Context, progress func(Progress)) (*Result, error) {
	start := time.Now()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	targets := []string{e.cfg.Dest}
	if !e.cfg.Direct {
		targets = append(targets, e.cfg.Via...)
	}
	if len(targets) > wire.MaxHolders {
		return nil, fmt.Errorf("evict: %d targets, at most %d", len(targets), wire.MaxHolders)
	}

	// 1. Ask every target what it can take (one round trip, all at once).
	sc, err := newScheduler(ctx, e, targets)
	if err == nil {
		err = sc.tooFewForStripesLocked() // nothing runs yet: no lock needed
	}
	if err != nil {
		return nil, err
	}
	pull := sc.destMayPull()

	// 2. Open every migration at the destination, so it can start
	//    gathering (and demand-reading) at once, and 3. scatter beside it:
	//    chunks need no migration, only their placements do, and those
	//    wait for the Open (a round trip off the eviction time).
	holders := make([]wire.Holder, len(targets))
	for i, t := range targets {
		holders[i] = wire.Holder{Index: uint8(i), Peer: t}
	}
	pl := newPlacer(e)
	sc.placed, sc.placedPush = pl.add, pl.addPush
	var total int64
	for _, v := range e.vms {
		total += v.res.Bytes
	}
	images := make([]*image, len(e.vms))
	for i := range e.vms {
		images[i] = e.vms[i].img
	}
	pr := newProducer(images, e.cfg.SpanBytes, e.cfg.Hashers, e.cfg.Seal, ErrImageChanged)
	seq := newSequencer(e, sc)
	g, gctx := errgroup.WithContext(ctx)
	opened := make(chan struct{})
	g.Go(func() error {
		if err := e.openSessions(gctx, pull, holders); err != nil {
			return err
		}
		close(opened)
		return nil
	})
	g.Go(func() error { return pl.run(gctx, opened) })
	g.Go(func() error {
		err := sc.run(gctx)
		pl.close() // everything is placed: flush and stop
		return err
	})
	g.Go(func() error {
		err := seq.run(gctx, pr)
		e.log.Debug("every chunk read and queued", "elapsed", time.Since(start))
		sc.producerDone(err)
		if err != nil {
			return err
		}
		for i := range e.vms {
			v := &e.vms[i]
			v.res.Chunks, v.res.ZeroChunks = v.img.chunks, v.img.zeroChunks
			v.res.DupWithin, v.res.DupAcross = v.img.dupWithin, v.img.dupAcross
		}
		pl.hurry()
		// Every position's chunk is known: the manifests travel beside
		// the chunks still in flight rather than after them.
		for i := range e.vms {
			v := &e.vms[i]
			if err := e.buildManifest(v); err != nil {
				return fmt.Errorf("evict %s: manifest: %w", v.Name, err)
			}
			var err error
			if v.manifestAt, err = sc.pushManifest(gctx, v.manifest, sc.manifestBuilders(v)); err != nil && gctx.Err() == nil {
				// Tried again once the scatter is done, on whichever
				// targets are left.
				e.log.Debug("manifest not stored during the scatter", "vm", v.Name, "err", err)
			}
		}
		return nil
	})
	if progress != nil {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					progress(Progress{BytesRead: pr.read.Load(), BytesTotal: total, UniqueDone: sc.uniqueDone.Load(),
						Sent: sc.sentSnapshot(), Elapsed: time.Since(start)})
				}
			}
		})
		defer func() { close(stop); wg.Wait() }()
	}
	// The placer ends when the scheduler has placed everything and closed it.
	if err := g.Wait(); err != nil {
		e.abortSessions()
		return nil, fmt.Errorf("evict: %w", err)
	}

	if e.cfg.Unchanged != nil {
		if err := e.cfg.Unchanged(); err != nil {
			e.abortSessions()
			return nil, fmt.Errorf("evict: %w: %w", ErrImageChanged, err)
		}
	}
	e.log.Debug("every chunk has its holders", "elapsed", time.Since(start))
	// 4. Manifests, stored during the scatter (again now where a target
	//    holding one was lost), are handed over with Done.
	res := &Result{Replicas: e.cfg.Replicas, Redundancy: e.cfg.Redundancy}
	for i := range e.vms {
		v := &e.vms[i]
		var err error
		if v.manifestAt, err = sc.pushManifest(ctx, v.manifest, v.manifestAt); err != nil {
			e.abortSessions()
			return nil, fmt.Errorf("evict %s: %w", v.Name, err)
		}
		if err := e.handOver(ctx, sc, v); err != nil {
			e.abortSessions()
			return nil, fmt.Errorf("evict %s: hand over manifest: %w", v.Name, err)
		}
	}
	res.ET = time.Since(start)
	for i := range e.vms {
		v := &e.vms[i]
		if err := v.session.Close(); err != nil {
			e.log.Warn("close migration session", "vm", v.Name, "err", err)
		}
		res.VMs = append(res.VMs, v.res)
		res.Bytes += v.res.Bytes
		res.Chunks += v.res.Chunks
		res.ZeroChunks += v.res.ZeroChunks
		res.DupWithin += v.res.DupWithin
		res.DupAcross += v.res.DupAcross
		res.ManifestBytes += v.res.ManifestBytes
		res.ParityChunks += v.res.ParityChunks
		res.ParityBytes += v.res.ParityBytes
	}
	res.SentBytes = sc.sentSnapshot()
	res.ManifestPushed = sc.manifestPushed.Load()
	res.AlreadyHeld = sc.alreadyHeld.Load()
	res.UniqueChunks, res.UniqueBytes = pr.uniqueChunks, pr.uniqueBytes
	res.Repaired = sc.repaired.Load()
	res.EndgameBytes = sc.endgame.Load()
	return res, nil
}

// openSessions opens every VM's migration at the destination and declares
// the holders its placements will name.
func (e *Eviction) openSessions(ctx context.Context, pull bool, holders []wire.Holder) error {
	for i := range e.vms {
		v := &e.vms[i]
		o := wire.Open{ID: v.id, VM: v.Name, Secret: v.secret, PullDuringScatter: pull}
		for _, r := range v.Regions {
			o.Regions = append(o.Regions, wire.RegionInfo{Name: r.Name, Kind: uint8(r.Kind), Size: uint64(r.Size), ChunkSize: uint32(r.ChunkSize)})
		}
		s, err := e.cl.OpenMigration(ctx, e.cfg.Dest, o)
		if err != nil {
			return fmt.Errorf("open the migration of %s: %w", v.Name, err)
		}
		v.session = s
		if err := s.Holders(ctx, holders); err != nil {
			return fmt.Errorf("open the migration of %s: %w", v.Name, err)
		}
	}
	return nil
}

// cancelTimeout bounds the wait for a destination to acknowledge that a
// failed eviction's migration is given up.
const cancelTimeout = 3 * time.Second

// abortSessions gives every migration up at its destination, waiting (a
// bounded while) for each to acknowledge, so that the caller resumes the
// VM at the source only once no destination runs it.
func (e *Eviction) abortSessions() {
	for i := range e.vms {
		if s := e.vms[i].session; s != nil {
			ctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
			if err := s.Cancel(ctx, "eviction failed"); err != nil {
				e.log.Warn("destination did not acknowledge the aborted migration", "vm", e.vms[i].Name, "err", err)
			}
			cancel()
			s.Abort()
		}
	}
}
