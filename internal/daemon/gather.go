package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/fetch/nbdview"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/seal"
	"github.com/sgrelay/sg/internal/wire"
)

// views serves the lazy views of incoming VMs: NBD exports of their
// disks, each in a goroutine the daemon owns (wg), stopped when their
// migration is retired or with the daemon.
type views struct {
	d   *Daemon
	ctx context.Context // the daemon's run context
	wg  sync.WaitGroup

	mu      sync.Mutex
	nbd     map[wire.MigrationID]map[string]string // region name → NBD socket
	exports map[wire.MigrationID]*exports
}

// exports are one migration's NBD servers.
type exports struct {
	servers []*nbdview.Server
	stop    context.CancelFunc
	wg      sync.WaitGroup // their Serve goroutines
}

// onGather mounts a starting gather's lazy views: a FUSE file per region
// and an NBD export per disk.
func (d *Daemon) onGather(in *fetch.Incoming, g *fetch.Gatherer) {
	if err := d.mountLazy(in, g); err != nil {
		d.log.Warn("no lazy FUSE view for this migration", "vm", in.VM, "err", err)
	}
	d.views.exportDisks(in, g)
	d.maybeResumeGuest(in, g)
}

func (d *Daemon) onGatherDone(in *fetch.Incoming, g *fetch.Gatherer, rep fetch.Report, err error) {
	if err == nil {
		d.gatherTMT.Observe(rep.TMT.Seconds())
	}
	d.afterGather(in, g)
	if d.runCtx.Err() != nil {
		return // our own shutdown: the gather resumes at the next start
	}
	d.views.wg.Add(1)
	go func() { // owned by the daemon: views.wg
		defer d.views.wg.Done()
		d.retireWhenUnused(in, g, err)
	}()
}

// wait waits for every view goroutine (after the context is cancelled).
func (vs *views) wait() { vs.wg.Wait() }

// exportDisks serves every disk region of an incoming VM over NBD on a
// unix socket <data>/nbd/<local name>-<region index>.sock (localNames), for the life
// of the daemon (names from peers never become paths).
func (vs *views) exportDisks(in *fetch.Incoming, g *fetch.Gatherer) {
	d := vs.d
	dir := filepath.Join(d.cfg.DataDir, "nbd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		d.log.Warn("no NBD exports", "err", err)
		return
	}
	socks := map[string]string{}
	ctx, stop := context.WithCancel(vs.ctx)
	ex := &exports{stop: stop}
	for i, r := range in.Regions {
		if manifest.Kind(r.Kind) != manifest.KindDisk {
			continue
		}
		path := filepath.Join(dir, fmt.Sprintf("%s-%d.sock", d.names.of(in.ID), i))
		_ = os.Remove(path)
		ln, err := net.Listen("unix", path)
		if err != nil {
			d.log.Warn("no NBD export", "vm", in.VM, "region", r.Name, "err", err)
			continue
		}
		_ = os.Chmod(path, 0o600)
		srv := &nbdview.Server{Name: r.Name, Size: int64(r.Size), Disk: g.Region(i), Log: d.log}
		socks[r.Name] = path
		ex.servers = append(ex.servers, srv)
		vs.wg.Add(1)
		ex.wg.Add(1)
		go func() {
			defer vs.wg.Done()
			defer ex.wg.Done()
			defer os.Remove(path)
			if err := srv.Serve(ctx, ln); err != nil {
				d.log.Warn("NBD export stopped", "socket", path, "err", err)
			}
		}()
	}
	vs.mu.Lock()
	vs.nbd[in.ID] = socks
	vs.exports[in.ID] = ex
	vs.mu.Unlock()
}

// clients is how many NBD clients are connected to migration id's exports.
func (vs *views) clients(id wire.MigrationID) int64 {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	var n int64
	if ex := vs.exports[id]; ex != nil {
		for _, s := range ex.servers {
			n += s.Conns()
		}
	}
	return n
}

// close stops migration id's exports (disconnecting any client), closes
// their listeners and waits for their goroutines.
func (vs *views) close(id wire.MigrationID) {
	vs.mu.Lock()
	ex := vs.exports[id]
	delete(vs.exports, id)
	delete(vs.nbd, id)
	vs.mu.Unlock()
	if ex != nil {
		ex.stop()
		ex.wg.Wait()
	}
}

// count is how many migrations have NBD exports up.
func (vs *views) count() int {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	return len(vs.exports)
}

func (vs *views) nbdSockets(id wire.MigrationID) map[string]string {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	return vs.nbd[id]
}

// serveGather gathers a manifest that already exists here.
func (d *Daemon) serveGather(w http.ResponseWriter, r *http.Request) {
	var req api.GatherRequest
	if !decodeRequest(w, r, &req) {
		return
	}
	ev := newEventStream(w)
	rep, err := d.gather(r.Context(), req, func(p api.Progress) { ev.progress(api.Event{Progress: &p}) })
	ev.end(api.Event{Gather: rep}, err)
}

// gather gathers the VM of an existing manifest here: from the peers
// named, or every connected peer that holds its root. It reports until
// the gather ends; if ctx ends first, the gather goes on in the daemon.
func (d *Daemon) gather(ctx context.Context, req api.GatherRequest, progress func(api.Progress)) (*api.GatherReport, error) {
	root, err := parseCID(req.CID)
	if err != nil {
		return nil, err
	}
	holders, err := d.gatherHolders(ctx, root, req.From)
	if err != nil {
		return nil, err
	}
	var secret seal.Secret
	if req.Secret != "" {
		if secret, err = seal.ParseSecret(req.Secret); err != nil {
			return nil, invalid("secret", err)
		}
	}
	in, g, err := d.gatherManifest(ctx, root, holders, secret)
	if err != nil {
		return nil, err
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-g.Done(): // Run syncs the files just after Done
			rep := g.Report()
			if rep.Err != "" {
				return nil, errors.New(rep.Err)
			}
			out := gatherReportToAPI(rep)
			out.Lazy, out.NBD = d.lazyDir(in.ID.String()), d.views.nbdSockets(in.ID)
			return out, nil
		case <-t.C:
			rep := g.Report()
			progress(api.Progress{Done: rep.ChunksPresent, Total: rep.ChunksTotal, Stage: "gather"})
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// gatherHolders are the peers named by from, or if none, the connected
// peers that hold root.
func (d *Daemon) gatherHolders(ctx context.Context, root chunk.ID, from []string) ([]fetch.Holder, error) {
	if len(from) == 0 {
		return d.holdersOf(ctx, root)
	}
	var holders []fetch.Holder
	for _, f := range from {
		p, err := d.resolvePeer("from", f)
		if err != nil {
			return nil, err
		}
		rtt, _ := d.net.RTT(p)
		holders = append(holders, fetch.Holder{Peer: p, RTT: rtt})
	}
	return holders, nil
}

// gatherManifest starts gathering manifest root from holders. The
// gather keeps the holders' copies: others may use them.
func (d *Daemon) gatherManifest(ctx context.Context, root chunk.ID, holders []fetch.Holder, secret seal.Secret) (*fetch.Incoming, *fetch.Gatherer, error) {
	peers := make([]string, len(holders))
	for i, h := range holders {
		peers[i] = h.Peer
	}
	var in *fetch.Incoming
	m, err := fetch.ResolveManifest(ctx, d.net, holders, d.store, root, secret)
	if err == nil {
		in, err = d.roles.Incomings().OpenFromManifest(root, m, secret, peers)
	}
	if errors.Is(err, manifest.ErrWrongSecret) {
		return nil, nil, conflict("secret", err)
	}
	if err != nil {
		return nil, nil, conflict("", err)
	}
	g, err := d.roles.StartGather(in, func(c *fetch.GatherConfig) { c.NoRelease = true })
	if err != nil {
		return nil, nil, err
	}
	if err := d.roles.Incomings().PlaceManifest(in, m, root); err != nil {
		return nil, nil, err
	}
	return in, g, nil
}
