package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/eviction"
	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/node"
	"github.com/sgrelay/sg/internal/wire"
)

// Config configures a node's part in migrations.
type Config struct {
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
	// KeepGathered keeps a complete gather's chunks in the store (to
	// serve further gathers of the VM from here); false drops the store's
	// copies once the files hold them.
	KeepGathered bool
	Log          *slog.Logger
}

// Roles is a node's part in migrations, wired to its protocols: as a
// source it serves demand reads from its running evictions' snapshots; as
// a destination it runs one gather per migration opened to it; as a holder
// it frees what finished migrations release. The daemon and simnet both
// run nodes through it.
type Roles struct {
	n     *node.Node
	store *chunkstore.Store
	in    *fetch.Incomings
	cfg   Config
	log   *slog.Logger
	ctx   context.Context // gathers live under it
	wg    sync.WaitGroup  // gather goroutines

	mu      sync.Mutex
	gathers map[wire.MigrationID]*gatherEntry // until retired
	// dropped are chunks of ended gathers waiting to leave the store
	// until no other migration is open here (dropLocalCopies).
	dropped  []chunk.ID
	evicting map[wire.MigrationID]*eviction.Eviction
}

// gatherEntry is one gather between its start and its retirement.
type gatherEntry struct {
	g     *fetch.Gatherer
	ended chan struct{} // closed once Run has returned
}

// Serve installs Roles on n, whose store is store. Gathers run until ctx
// ends; call Wait after cancelling it and before closing the store.
func Serve(ctx context.Context, n *node.Node, store *chunkstore.Store, cfg Config) *Roles {
	r := &Roles{n: n, store: store, in: fetch.NewIncomings(store), cfg: cfg, log: cfg.Log, ctx: ctx,
		gathers: map[wire.MigrationID]*gatherEntry{}, evicting: map[wire.MigrationID]*eviction.Eviction{}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.in.SetAdmission(admission(n.Config(), cfg.Dir))
	if err := n.Registry().Register(migrationsCollector{r}); err != nil {
		r.log.Warn("migration gauges not registered", "err", err)
	}
	n.SetMigrationSink(roleSink{r})
	n.SetDemandServer(r)
	n.SetReleaseHandler(r)
	return r
}

// Incomings are the migrations opened to this node.
func (r *Roles) Incomings() *fetch.Incomings { return r.in }

// Gatherer returns the gather of migration id, nil if none (or retired).
func (r *Roles) Gatherer(id wire.MigrationID) *fetch.Gatherer {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.gathers[id]; e != nil {
		return e.g
	}
	return nil
}

// Retire ends migration id's life here once its gather has ended (it
// waits for Run to return): the gather's files and per-position state and
// the migration's pins and placements are dropped, and its source's later
// frames are refused. The caller takes down the views first: a view read
// after this fails. It returns false if no such gather is here.
func (r *Roles) Retire(id wire.MigrationID) bool {
	r.mu.Lock()
	e := r.gathers[id]
	r.mu.Unlock()
	if e == nil {
		return false
	}
	<-e.ended
	if err := e.g.Close(); err != nil {
		r.log.Warn("closing a retired gather's files", "migration", id, "err", err)
	}
	r.in.Remove(id)
	r.mu.Lock()
	delete(r.gathers, id)
	r.mu.Unlock()
	return true
}

// GatherCounts counts the gathers not yet retired by state: "gathering",
// "complete" or "failed".
func (r *Roles) GatherCounts() map[string]int {
	r.mu.Lock()
	gs := make([]*fetch.Gatherer, 0, len(r.gathers))
	for _, e := range r.gathers {
		gs = append(gs, e.g)
	}
	r.mu.Unlock()
	out := map[string]int{"gathering": 0, "complete": 0, "failed": 0}
	for _, g := range gs {
		out[gatherState(g)]++
	}
	return out
}

func gatherState(g *fetch.Gatherer) string {
	select {
	case <-g.Done():
		if g.Err() != nil {
			return "failed"
		}
		return "complete"
	default:
		return "gathering"
	}
}

// Scattering is how many migrations this node is the source of now.
func (r *Roles) Scattering() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.evicting)
}

// dropLocalCopies deletes from the store the chunks an ended gather
// brought here (complete: its files hold them; abandoned: worthless),
// unless an owner pins them: the VM's files are the one copy kept here,
// and the memory tier goes back to serving migrations. While another
// migration is open here they wait (dropped), since its source may have
// been told by a have query that this node holds them and place them
// later; the last gather to end while none other runs drops them all. A later gather of
// the same content fetches it again (this store does not index the files).
func (r *Roles) dropLocalCopies(self wire.MigrationID, ids []chunk.ID) (chunks int, bytes int64) {
	r.mu.Lock()
	r.dropped = append(r.dropped, ids...)
	alone := r.in.Len() <= len(r.gathers) // no migration opened without its gather yet
	for id, e := range r.gathers {
		if id != self && gatherState(e.g) == "gathering" {
			alone = false
		}
	}
	if !alone {
		r.mu.Unlock()
		return 0, 0
	}
	ids, r.dropped = r.dropped, nil
	r.mu.Unlock()
	for _, id := range ids {
		// Checked and deleted under the store's lock: a push holding the
		// chunk meanwhile keeps it.
		size, err := r.store.DeleteUnpinned(id)
		if err != nil {
			r.log.Warn("dropping a gathered chunk's store copy", "chunk", id, "err", err)
			continue
		}
		if size > 0 {
			r.n.Deleted(id)
			bytes += int64(size)
			chunks++
		}
	}
	return chunks, bytes
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

// ServeDemand implements node.DemandServer: a destination reads a chunk by
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

// Release implements node.ReleaseHandler: the holds naming the migration end
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

// StartGather starts gathering in; adjust (after Config.Gather)
// tunes this one gather, e.g. NoRelease for an existing manifest.
func (r *Roles) StartGather(in *fetch.Incoming, adjust ...func(*fetch.GatherConfig)) (*fetch.Gatherer, error) {
	dir := filepath.Join(r.cfg.Dir, in.ID.String())
	cfg := fetch.DefaultGatherConfig(dir)
	cfg.Zone, cfg.Log, cfg.Intake = r.n.Config().Zone, r.log, r.n.Ingest()
	cfg.StillNeeded = func(id chunk.ID) bool { return r.neededByOthers(in.ID, id) }
	if r.cfg.Gather != nil {
		r.cfg.Gather(&cfg)
	}
	for _, a := range adjust {
		a(&cfg)
	}
	// A retired migration is forgotten, but its files stay: an Open that
	// reuses its ID (a replay) must not truncate a VM gathered here.
	if _, err := os.Stat(cfg.Dir); !cfg.Resume && err == nil {
		return nil, fmt.Errorf("gather %s into %s: the directory exists (a migration with this ID was gathered here): %w", in.ID, cfg.Dir, fetch.ErrDuplicateMigration)
	}
	g, err := fetch.NewGatherer(in, NewNet(r.n), r.store, cfg)
	if err != nil {
		return nil, err
	}
	in.SetListener(g)
	e := &gatherEntry{g: g, ended: make(chan struct{})}
	r.mu.Lock()
	r.gathers[in.ID] = e
	r.mu.Unlock()
	if r.cfg.OnGather != nil {
		r.cfg.OnGather(in, g)
	}
	r.log.Info("gather started", "vm", in.VM, "migration", in.ID, "source", in.Source, "dir", dir)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		err := g.Run(r.ctx)
		close(e.ended)
		rep := g.Report()
		if err != nil {
			r.log.Warn("gather failed", "vm", in.VM, "migration", in.ID, "err", err)
			if errors.Is(err, fetch.ErrAbandoned) { // the VM stays at its source: what came here is worthless
				r.store.Unpin(in.ID.String())
				n, b := r.dropLocalCopies(in.ID, g.ChunkIDs())
				r.log.Debug("an abandoned migration's chunks dropped from the store", "migration", in.ID, "chunks", n, "bytes", b)
			}
		} else {
			r.log.Info("gather complete", "vm", in.VM, "migration", in.ID, "tmt", rep.TMT,
				"demand_reads", rep.DemandReads, "network_faults", rep.NetworkFaults, "local_chunks", rep.LocalChunks, "files", rep.Paths)
			if !cfg.NoRelease && !r.cfg.KeepGathered { // a gather of an existing manifest leaves the store as it was
				n, b := r.dropLocalCopies(in.ID, g.ChunkIDs())
				r.log.Debug("gathered chunks dropped from the store: the files hold them", "migration", in.ID, "chunks", n, "bytes", b)
			}
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
	for mid, e := range r.gathers {
		if mid != self && e.g.Needs(id) {
			return true
		}
	}
	return false
}
