package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/chunk"
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

func decodeRequest(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, invalid("", fmt.Errorf("bad request: %w", err)))
		return false
	}
	return true
}

// parseCID parses a request's CID.
func parseCID(s string) (chunk.ID, error) {
	id, err := chunk.Parse(s)
	if err != nil {
		return chunk.ID{}, invalid("", err)
	}
	return id, nil
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
// The stream starts with its first event: a request that fails before
// any is answered with its error's status instead.
type eventStream struct {
	mu       sync.Mutex
	w        http.ResponseWriter
	rc       *http.ResponseController
	started  bool
	lastProg time.Time
}

func newEventStream(w http.ResponseWriter) *eventStream {
	return &eventStream{w: w, rc: http.NewResponseController(w)}
}

// progress sends a progress event unless one went less than 200 ms ago.
func (s *eventStream) progress(ev api.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.lastProg) < 200*time.Millisecond {
		return
	}
	s.lastProg = time.Now()
	s.sendLocked(ev)
}

// end sends the final event: result, or err.
func (s *eventStream) end(result api.Event, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil && !s.started:
		writeError(s.w, err)
	case err != nil:
		s.sendLocked(api.Event{Error: err.Error()})
	default:
		s.sendLocked(result)
	}
}

func (s *eventStream) sendLocked(ev api.Event) {
	if !s.started {
		s.w.Header().Set("Content-Type", "application/x-ndjson")
		s.w.WriteHeader(http.StatusOK)
		s.started = true
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
		return nil, conflict("", errors.New("only this node holds that CID; nothing to fetch from peers"))
	}
	if len(out) == 0 && len(errs) > 0 {
		return nil, conflict("", fmt.Errorf("no connected peer holds %s: %w", root, errors.Join(errs...)))
	}
	if len(out) == 0 {
		return nil, conflict("", fmt.Errorf("no connected peer holds %s", root))
	}
	return out, nil
}

// resolvePeer finds the connected peer named by s: a full peer ID, or a
// part of one that matches exactly one connected peer. Its errors name
// the request's field.
func (d *Daemon) resolvePeer(field, s string) (string, error) {
	var matches []string
	for _, h := range d.connectedPeers() {
		if h.Peer == s {
			return s, nil
		}
		if s != "" && strings.Contains(h.Peer, s) {
			matches = append(matches, h.Peer)
		}
	}
	switch len(matches) {
	case 1:
		return matches[0], nil
	case 0:
		return "", invalid(field, fmt.Errorf("%q matches no connected peer", s))
	}
	return "", invalid(field, fmt.Errorf("%q matches %d connected peers; give more of the peer ID", s, len(matches)))
}
