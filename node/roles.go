package node

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/chunkstore"
	"github.com/sgrelay/sg/eviction"
	"github.com/sgrelay/sg/fetch"
	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/wire"
)

// RolesConfig configures a node's part in migrations.
type RolesConfig struct {
	// Dir holds gathered VMs, one directory each named by its migration
	// ID (hex): names from peers never become paths.
	Dir string
	// Gather adjusts each gather's configuration (nil: the defaults).
	Gather func(*fetch.GatherConfig)
	// OnGather is called when a gather starts, before it runs (the daemon
	// mounts its lazy views here); nil: nothing.
	OnGather func(*fetch.Incoming, *fetch.Gatherer)
	// OnGatherDone is called when a gather ends, with its error; nil: nothing.
	OnGatherDone func(*fetch.Incoming, *fetch.Gatherer, fetch.Report, error)
	// OnAbandon is called when a source gives up a migration we gather,
	// before the source is answered (it resumes its VM after the answer).
	OnAbandon func(*fetch.Incoming, *fetch.Gatherer)
	Log       *slog.Logger
}

// Roles is a node's part in migrations, wired to its protocols: as a
// source it serves demand reads from its running evictions' snapshots; as
// a destination it runs one gather per migration opened to it; as a holder
// it frees what finished migrations release. The daemon and simnet both
// run nodes through it.
type Roles struct {
	n     *Node
	store *chunkstore.Store
	in    *fetch.Incomings
	cfg   RolesConfig
	log   *slog.Logger
	ctx   context.Context // gathers live under it
	wg    sync.WaitGroup  // gather goroutines

	mu       sync.Mutex
	gathers  map[wire.MigrationID]*fetch.Gatherer
	evicting map[wire.MigrationID]*eviction.Eviction
}

// ServeRoles installs Roles on n. Gathers run until ctx ends; call Wait
// after cancelling it and before closing the store.
func (n *Node) ServeRoles(ctx context.Context, store *chunkstore.Store, cfg RolesConfig) *Roles {
	r := &Roles{n: n, store: store, in: fetch.NewIncomings(store), cfg: cfg, log: cfg.Log, ctx: ctx,
		gathers: map[wire.MigrationID]*fetch.Gatherer{}, evicting: map[wire.MigrationID]*eviction.Eviction{}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.in.SetAdmission(n.admission(cfg.Dir))
	n.SetMigrationSink(roleSink{r})
	n.SetDemandServer(r)
	n.SetReleaseHandler(r)
	return r
}

// Incomings are the migrations opened to this node.
func (r *Roles) Incomings() *fetch.Incomings { return r.in }

// Gatherer returns the gather of migration id, nil if none.
func (r *Roles) Gatherer(id wire.MigrationID) *fetch.Gatherer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gathers[id]
}

// Wait waits for every gather to end (after the context is cancelled).
func (r *Roles) Wait() { r.wg.Wait() }

// Evicting serves demand reads for e's migrations until stop is called.
func (r *Roles) Evicting(e *eviction.Eviction) (stop func()) {
	r.mu.Lock()
	for _, id := range e.MigrationIDs() {
		r.evicting[id] = e
	}
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		for _, id := range e.MigrationIDs() {
			delete(r.evicting, id)
		}
		r.mu.Unlock()
	}
}

// ServeDemand implements DemandServer: a destination reads a chunk by
// position from a running eviction's snapshot. Only the migration's
// destination is served: no other peer reads a guest's memory.
func (r *Roles) ServeDemand(from peer.ID, d wire.DemandReq, dst []byte) ([]byte, wire.Status) {
	r.mu.Lock()
	e := r.evicting[d.ID]
	r.mu.Unlock()
	if e == nil {
		return dst, wire.StatusMissing
	}
	if e.Dest() != from.String() {
		return dst, wire.StatusRefused
	}
	out, err := e.ReadChunk(d.ID, d.Region, d.Index, dst)
	if err != nil {
		return dst, wire.StatusMissing
	}
	return out, wire.StatusOK
}

// Release implements ReleaseHandler: the holds naming the migration end
// if from is its destination, and the chunks no other migration or put
// keeps are deleted. The chunks listed are not trusted: a release frees
// only what the migration's own holds kept.
func (r *Roles) Release(from peer.ID, rel wire.Release) (int, error) {
	freed, err := r.n.ReleaseHeld(from, rel.ID, true)
	if len(rel.Chunks) > 0 || freed > 0 {
		r.log.Info("migration released", "migration", rel.ID, "from", from, "listed", len(rel.Chunks), "freed", freed)
	}
	return freed, err
}

// StartGather starts gathering in; adjust (after RolesConfig.Gather)
// tunes this one gather, e.g. NoRelease for an existing manifest.
func (r *Roles) StartGather(in *fetch.Incoming, adjust ...func(*fetch.GatherConfig)) (*fetch.Gatherer, error) {
	dir := filepath.Join(r.cfg.Dir, in.ID.String())
	cfg := fetch.DefaultGatherConfig(dir)
	cfg.Zone, cfg.Log, cfg.Intake = r.n.cfg.Zone, r.log, r.n.ingest
	cfg.StillNeeded = func(id chunk.ID) bool { return r.neededByOthers(in.ID, id) }
	if r.cfg.Gather != nil {
		r.cfg.Gather(&cfg)
	}
	for _, a := range adjust {
		a(&cfg)
	}
	g, err := fetch.NewGatherer(in, r.n.Cluster(), r.store, cfg)
	if err != nil {
		return nil, err
	}
	in.SetListener(g)
	r.mu.Lock()
	r.gathers[in.ID] = g
	r.mu.Unlock()
	if r.cfg.OnGather != nil {
		r.cfg.OnGather(in, g)
	}
	r.log.Info("gather started", "vm", in.VM, "migration", in.ID, "source", in.Source, "dir", dir)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		err := g.Run(r.ctx)
		rep := g.Report()
		if err != nil {
			r.log.Warn("gather failed", "vm", in.VM, "migration", in.ID, "err", err)
		} else {
			r.log.Info("gather complete", "vm", in.VM, "migration", in.ID, "tmt", rep.TMT,
				"demand_reads", rep.DemandReads, "network_faults", rep.NetworkFaults, "local_chunks", rep.LocalChunks, "files", rep.Paths)
		}
		if r.cfg.OnGatherDone != nil {
			r.cfg.OnGatherDone(in, g, rep, err)
		}
	}()
	return g, nil
}

// neededByOthers reports whether an unfinished gather other than self
// still needs id, so releasing self does not free it at the holders.
func (r *Roles) neededByOthers(self wire.MigrationID, id chunk.ID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for mid, g := range r.gathers {
		if mid != self && g.Needs(id) {
			return true
		}
	}
	return false
}

// roleSink is the destination side of /sg/migrate: a migration opened
// here starts a gather at once, and its placements and manifest feed it.
type roleSink struct{ r *Roles }

func (s roleSink) OpenMigration(from peer.ID, o wire.Open) error {
	in, err := s.r.in.Open(from.String(), o)
	if err != nil {
		return err
	}
	_, err = s.r.StartGather(in)
	return err
}

// Expecting implements MigrationExpecter: from opened migration id here.
func (s roleSink) Expecting(from peer.ID, id wire.MigrationID) bool {
	in, err := s.r.in.Get(id)
	return err == nil && in.Source == from.String()
}

func (s roleSink) AddHolders(from peer.ID, id wire.MigrationID, hs []wire.Holder) error {
	return s.r.in.AddHolders(from.String(), id, hs)
}
func (s roleSink) AddPlacements(from peer.ID, id wire.MigrationID, ps []wire.Placement) error {
	return s.r.in.AddPlacements(from.String(), id, ps)
}
func (s roleSink) FinishMigration(from peer.ID, id wire.MigrationID, root chunk.ID, build bool) error {
	return s.r.in.Finish(from.String(), id, root, build)
}
func (s roleSink) AbandonMigration(from peer.ID, id wire.MigrationID, reason error) {
	s.r.in.Abandon(from.String(), id, reason)
	if s.r.cfg.OnAbandon == nil {
		return
	}
	s.r.mu.Lock()
	g := s.r.gathers[id]
	s.r.mu.Unlock()
	if g != nil {
		s.r.cfg.OnAbandon(g.Incoming(), g)
	}
}
