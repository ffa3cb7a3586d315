package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/fetch"
	"github.com/sgrelay/sg/fetch/nbdview"
	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/wire"
)

// gathers runs one Gatherer per migration opened to this node. Each runs
// in a goroutine the daemon owns (wg), cancelled when the daemon stops.
type gathers struct {
	d   *Daemon
	ctx context.Context // the daemon's run context; set before the node starts
	wg  sync.WaitGroup

	mu  sync.Mutex
	m   map[wire.MigrationID]*fetch.Gatherer
	nbd map[wire.MigrationID]map[string]string // region name → NBD socket
}

// migrationSink is the destination side: a migration opened here starts a
// gather at once, and its placements and manifest feed it.
type migrationSink struct {
	in *fetch.Incomings
	g  *gathers
}

func (s migrationSink) OpenMigration(from peer.ID, o wire.Open) error {
	in, err := s.in.Open(from.String(), o)
	if err != nil {
		return err
	}
	return s.g.start(in, false)
}
func (s migrationSink) AddHolders(from peer.ID, id wire.MigrationID, hs []wire.Holder) error {
	return s.in.AddHolders(from.String(), id, hs)
}
func (s migrationSink) AddPlacements(from peer.ID, id wire.MigrationID, ps []wire.Placement) error {
	return s.in.AddPlacements(from.String(), id, ps)
}
func (s migrationSink) FinishMigration(from peer.ID, id wire.MigrationID, root chunk.ID) error {
	return s.in.Finish(from.String(), id, root)
}

func (gs *gathers) start(in *fetch.Incoming, noRelease bool) error {
	d := gs.d
	dir := filepath.Join(d.cfg.DataDir, "vms", fmt.Sprintf("%s-%s", in.VM, in.ID.String()[:8]))
	cfg := fetch.DefaultGatherConfig(dir)
	cfg.Zone, cfg.Log, cfg.NoRelease = d.cfg.Node.Zone, d.log, noRelease
	cfg.StillNeeded = func(id chunk.ID) bool { return gs.neededByOthers(in.ID, id) }
	g, err := fetch.NewGatherer(in, nodeNetwork{d.node}, d.store, cfg)
	if err != nil {
		return err
	}
	in.SetListener(g)
	gs.mu.Lock()
	gs.m[in.ID] = g
	gs.mu.Unlock()
	if err := d.mountLazy(in, g); err != nil {
		d.log.Warn("no lazy FUSE view for this migration", "vm", in.VM, "err", err)
	}
	gs.exportDisks(in, g)
	d.log.Info("gather started", "vm", in.VM, "migration", in.ID, "source", in.Source, "dir", dir)
	gs.wg.Add(1)
	go func() {
		defer gs.wg.Done()
		err := g.Run(gs.ctx)
		rep := g.Report()
		if err != nil {
			d.log.Warn("gather failed", "vm", in.VM, "migration", in.ID, "err", err)
			return
		}
		d.gatherTMT.Observe(rep.TMT.Seconds())
		d.log.Info("gather complete", "vm", in.VM, "migration", in.ID, "tmt", rep.TMT,
			"demand_reads", rep.DemandReads, "network_faults", rep.NetworkFaults, "local_chunks", rep.LocalChunks, "files", rep.Paths)
	}()
	return nil
}

func (gs *gathers) get(id wire.MigrationID) *fetch.Gatherer {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	return gs.m[id]
}

// neededByOthers reports whether an unfinished gather other than self
// still needs id, so releasing self does not free it at the holders.
func (gs *gathers) neededByOthers(self wire.MigrationID, id chunk.ID) bool {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	for mid, g := range gs.m {
		if mid != self && g.Needs(id) {
			return true
		}
	}
	return false
}

// wait waits for every gather goroutine (after the context is cancelled).
func (gs *gathers) wait() { gs.wg.Wait() }

// releaseHandler frees what finished migrations no longer need: a holder
// deletes the chunks the destination lists, unless something here pins them.
type releaseHandler struct{ d *Daemon }

func (h releaseHandler) Release(from peer.ID, r wire.Release) (int, error) {
	freed := 0
	for _, id := range r.Chunks {
		if h.d.store.Pinned(id) || !h.d.store.Has(id) {
			continue
		}
		if err := h.d.store.Delete(id); err != nil {
			return freed, err
		}
		freed++
	}
	if freed > 0 || len(r.Chunks) > 0 {
		h.d.log.Info("migration released by its destination", "migration", r.ID, "from", from, "listed", len(r.Chunks), "freed", freed)
	}
	return freed, nil
}

// exportDisks serves every disk region of an incoming VM over NBD on a
// unix socket <data>/nbd/<vm>-<id>-<region>.sock, for the life of the daemon.
func (gs *gathers) exportDisks(in *fetch.Incoming, g *fetch.Gatherer) {
	d := gs.d
	dir := filepath.Join(d.cfg.DataDir, "nbd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		d.log.Warn("no NBD exports", "err", err)
		return
	}
	socks := map[string]string{}
	for i, r := range in.Regions {
		if manifest.Kind(r.Kind) != manifest.KindDisk {
			continue
		}
		path := filepath.Join(dir, fmt.Sprintf("%s-%s-%s.sock", in.VM, in.ID.String()[:8], r.Name))
		_ = os.Remove(path)
		ln, err := net.Listen("unix", path)
		if err != nil {
			d.log.Warn("no NBD export", "vm", in.VM, "region", r.Name, "err", err)
			continue
		}
		_ = os.Chmod(path, 0o600)
		srv := &nbdview.Server{Name: r.Name, Size: int64(r.Size), Disk: g.Region(i), Log: d.log}
		socks[r.Name] = path
		gs.wg.Add(1)
		go func() {
			defer gs.wg.Done()
			defer os.Remove(path)
			if err := srv.Serve(gs.ctx, ln); err != nil {
				d.log.Warn("NBD export stopped", "socket", path, "err", err)
			}
		}()
	}
	gs.mu.Lock()
	gs.nbd[in.ID] = socks
	gs.mu.Unlock()
}

func (gs *gathers) nbdSockets(id wire.MigrationID) map[string]string {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	return gs.nbd[id]
}

// serveGather gathers a manifest that already exists (sgctl gather): from
// the named peers, or every connected peer that holds its root.
func (d *Daemon) serveGather(w http.ResponseWriter, r *http.Request) {
	var req api.GatherRequest
	if !decodeRequest(w, r, &req) {
		return
	}
	root, ok := parseCID(w, req.CID)
	if !ok {
		return
	}
	var holders []fetch.Holder
	var err error
	if len(req.From) > 0 {
		for _, f := range req.From {
			p, err := d.resolvePeer(f)
			if err != nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("--from: %w", err))
				return
			}
			rtt, _ := nodeNetwork{d.node}.RTT(p)
			holders = append(holders, fetch.Holder{Peer: p, RTT: rtt})
		}
	} else if holders, err = d.holdersOf(r.Context(), root); err != nil {
		writeError(w, http.StatusConflict, err)
		return
	}
	m, ids, err := fetch.ResolveManifest(r.Context(), nodeNetwork{d.node}, holders, d.store, root)
	if err != nil {
		writeError(w, http.StatusConflict, err)
		return
	}
	peers := make([]string, len(holders))
	for i, h := range holders {
		peers[i] = h.Peer
	}
	in, err := d.in.OpenFromManifest(root, m, peers)
	if err != nil {
		writeError(w, http.StatusConflict, err)
		return
	}
	if err := d.gathers.start(in, true); err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	g := d.gathers.get(in.ID)
	if err := d.in.PlaceManifest(in, ids, root); err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	ev := newEventStream(w)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-g.Done():
			rep := g.Report()
			out := gatherReportToAPI(rep)
			out.Lazy, out.NBD = d.lazyDir(in.ID.String()), d.gathers.nbdSockets(in.ID)
			if rep.Err != "" {
				ev.send(api.Event{Error: rep.Err}, true)
				return
			}
			// Run syncs the files just after Done; wait for the sync.
			ev.send(api.Event{Gather: out}, true)
			return
		case <-t.C:
			rep := g.Report()
			ev.send(api.Event{Progress: &api.Progress{Done: rep.ChunksPresent, Total: rep.ChunksTotal, Stage: "gather"}}, false)
		case <-r.Context().Done():
			return // the gather goes on in the daemon
		}
	}
}
