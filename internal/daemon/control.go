package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/eviction"
	"github.com/sgrelay/sg/internal/fetch"
)

// maxRequestBody caps a control request's JSON.
const maxRequestBody = 1 << 20

func (d *Daemon) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", d.serveStatus)
	mux.HandleFunc("GET /v1/peers", d.servePeers)
	mux.HandleFunc("POST /v1/put", d.servePut)
	mux.HandleFunc("DELETE /v1/puts/{cid}", d.serveRemovePut)
	mux.HandleFunc("POST /v1/get", d.serveGet)
	mux.HandleFunc("GET /v1/vms", d.serveVMs)
	mux.HandleFunc("POST /v1/vms", d.serveAddVM)
	mux.HandleFunc("DELETE /v1/vms/{name}", d.serveRemoveVM)
	mux.HandleFunc("POST /v1/evict", d.serveEvict)
	mux.HandleFunc("POST /v1/verify", d.serveVerify)
	mux.HandleFunc("POST /v1/gather", d.serveGather)
	mux.HandleFunc("GET /v1/migrations", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, d.migrationsList()) })
	mux.HandleFunc("DELETE /v1/migrations/{id}", d.serveRemoveMigration)
	mux.HandleFunc("POST /v1/migrations/prune", d.servePruneMigrations)
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{}))
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, api.ErrorBody{Error: err.Error()})
}

func decodeRequest(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("bad request: %w", err))
		return false
	}
	return true
}

// parseCID parses a request's CID, answering 400 if it is not one.
func parseCID(w http.ResponseWriter, s string) (chunk.ID, bool) {
	id, err := chunk.Parse(s)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return chunk.ID{}, false
	}
	return id, true
}

func (d *Daemon) serveStatus(w http.ResponseWriter, _ *http.Request) {
	st := api.Status{
		PeerID:  d.node.ID().String(),
		Zone:    d.cfg.Node.Zone,
		Uptime:  time.Since(d.started),
		Version: d.cfg.Version,
	}
	for _, a := range d.node.Addrs() {
		st.Addrs = append(st.Addrs, a.String())
	}
	for _, t := range d.store.TierStats() {
		st.Tiers = append(st.Tiers, api.Tier{Name: t.Name, Chunks: t.Chunks, Bytes: t.Bytes, Used: t.Used, Budget: t.Budget})
	}
	writeJSON(w, http.StatusOK, st)
}

func (d *Daemon) servePeers(w http.ResponseWriter, _ *http.Request) {
	out := []api.Peer{}
	for _, p := range d.node.Peers() {
		out = append(out, api.Peer{
			ID: p.ID.String(), Addrs: p.Addrs, Connected: p.Connected, Admitted: p.Admitted,
			RTT: p.RTT, Zone: p.Zone, MemFree: p.MemFree, DiskFree: p.DiskFree, Load: p.Load,
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// eventStream writes NDJSON events, throttling progress to a few a second.
type eventStream struct {
	mu       sync.Mutex
	w        http.ResponseWriter
	rc       *http.ResponseController
	lastProg time.Time
}

func newEventStream(w http.ResponseWriter) *eventStream {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	return &eventStream{w: w, rc: http.NewResponseController(w)}
}

func (s *eventStream) send(ev api.Event, force bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ev.Progress != nil && !force && time.Since(s.lastProg) < 200*time.Millisecond {
		return
	}
	if ev.Progress != nil {
		s.lastProg = time.Now()
	}
	_ = json.NewEncoder(s.w).Encode(ev)
	_ = s.rc.Flush()
}

// connectedPeers lists connected peers, nearest first.
func (d *Daemon) connectedPeers() []fetch.Holder {
	var out []fetch.Holder
	for _, p := range d.node.Peers() {
		if p.Connected && p.Admitted {
			out = append(out, fetch.Holder{Peer: p.ID.String(), RTT: p.RTT})
		}
	}
	return out
}

func (d *Daemon) servePut(w http.ResponseWriter, r *http.Request) {
	var req api.PutRequest
	if !decodeRequest(w, r, &req) {
		return
	}
	cfg := eviction.DefaultPutConfig()
	cfg.Name = filepath.Base(req.Path)
	if req.ChunkSize > 0 {
		cfg.ChunkSize = req.ChunkSize
	}
	if req.Replicas <= 0 {
		req.Replicas = 1
	}
	cfg.Expire = req.Expire
	if err := cfg.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if !filepath.IsAbs(req.Path) {
		writeError(w, http.StatusBadRequest, fmt.Errorf("path %q is not absolute", req.Path))
		return
	}
	f, err := os.Open(req.Path)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		writeError(w, http.StatusBadRequest, fmt.Errorf("%s is not a regular file", req.Path))
		return
	}
	peers := d.connectedPeers()
	if len(peers) < req.Replicas {
		writeError(w, http.StatusConflict, fmt.Errorf("--replicas %d needs %d connected peers; %d connected (see sgctl peers)", req.Replicas, req.Replicas, len(peers)))
		return
	}
	var targets []string
	for _, p := range peers[:req.Replicas] {
		targets = append(targets, p.Peer)
	}
	d.log.Info("put started", "path", req.Path, "size", fi.Size(), "targets", targets)
	ev := newEventStream(w)
	res, err := eviction.Put(r.Context(), d.node.Cluster(), targets, f, fi.Size(), cfg, func(p eviction.PutProgress) {
		ev.send(api.Event{Progress: &api.Progress{Done: p.BytesAcked, Total: p.Total, Stage: "push"}}, false)
	})
	if err != nil {
		d.ops.WithLabelValues("put", "error").Inc()
		d.log.Warn("put failed", "path", req.Path, "err", err)
		ev.send(api.Event{Error: err.Error()}, true)
		return
	}
	d.ops.WithLabelValues("put", "ok").Inc()
	if err := d.savePut(res.Root, putRecord{ID: res.ID.String(), Targets: targets}); err != nil {
		// The copies stay at their targets until their expiry, if any.
		d.log.Warn("put record not saved: sgctl rm cannot remove it", "cid", res.Root, "err", err)
	}
	d.log.Info("put done", "path", req.Path, "cid", res.Root, "duration", res.Duration)
	ev.send(api.Event{Put: &api.PutResult{
		CID: res.Root.String(), Size: res.Size, Chunks: res.Chunks, ZeroChunks: res.ZeroChunks, DupChunks: res.DupChunks,
		UniqueBytes: res.UniqueBytes, ManifestBytes: res.ManifestBytes, SentBytes: res.SentBytes, Duration: res.Duration,
	}}, true)
}

func (d *Daemon) serveGet(w http.ResponseWriter, r *http.Request) {
	var req api.GetRequest
	if !decodeRequest(w, r, &req) {
		return
	}
	root, ok := parseCID(w, req.CID)
	if !ok {
		return
	}
	if !filepath.IsAbs(req.Output) {
		writeError(w, http.StatusBadRequest, fmt.Errorf("output %q is not absolute", req.Output))
		return
	}
	holders, err := d.holdersOf(r.Context(), root)
	if err != nil {
		writeError(w, http.StatusConflict, err)
		return
	}
	// Write beside the output and rename on success: a failed get leaves
	// nothing that looks complete.
	tmp, err := os.CreateTemp(filepath.Dir(req.Output), "."+filepath.Base(req.Output)+".partial-*")
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	d.log.Info("get started", "cid", req.CID, "output", req.Output, "holders", len(holders))
	ev := newEventStream(w)
	res, err := fetch.Get(r.Context(), d.node.Cluster(), holders, d.store, root, tmp, fetch.DefaultConfig(), func(p fetch.Progress) {
		ev.send(api.Event{Progress: &api.Progress{Done: p.BytesDone, Total: p.Total, Stage: "fetch"}}, false)
	})
	if err == nil {
		err = tmp.Sync()
	}
	if err == nil {
		err = os.Rename(tmp.Name(), req.Output)
	}
	if err != nil {
		d.ops.WithLabelValues("get", "error").Inc()
		d.log.Warn("get failed", "cid", req.CID, "err", err)
		ev.send(api.Event{Error: err.Error()}, true)
		return
	}
	d.ops.WithLabelValues("get", "ok").Inc()
	d.log.Info("get done", "cid", req.CID, "output", req.Output, "duration", res.Duration)
	ev.send(api.Event{Get: &api.GetResult{
		Output: req.Output, Size: res.Size, Chunks: res.Chunks, ZeroChunks: res.ZeroChunks, LocalChunks: res.LocalChunks,
		Fetched: res.Fetched, Retried: res.Retried, Duration: res.Duration,
	}}, true)
}

// holdersOf asks every connected peer whether it holds root and returns
// those that do, nearest first.
func (d *Daemon) holdersOf(ctx context.Context, root chunk.ID) ([]fetch.Holder, error) {
	var out []fetch.Holder
	var errs []error
	for _, h := range d.connectedPeers() {
		p, _ := peer.Decode(h.Peer)
		if d.node.Host().Network().Connectedness(p) != network.Connected {
			continue
		}
		held, err := d.node.Have(ctx, p, []chunk.ID{root})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if held[0] {
			out = append(out, h)
		}
	}
	if len(out) == 0 && d.store.Has(root) {
		return nil, errors.New("only this node holds that CID; nothing to fetch from peers")
	}
	if len(out) == 0 && len(errs) > 0 {
		return nil, fmt.Errorf("no connected peer holds %s: %w", root, errors.Join(errs...))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no connected peer holds %s", root)
	}
	return out, nil
}
