package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/eviction"
	"github.com/sgrelay/sg/internal/wire"
)

// putRecord is what this node remembers of a put it made, so that
// `sgctl rm CID` can ask its targets to drop it: they know it by the put's
// ID, and keep it for the peer that pushed it only.
type putRecord struct {
	ID      string   `json:"id"` // the put's wire.MigrationID, in hex
	Targets []string `json:"targets"`
}

// putsDir holds one record per put, named by its CID.
func (d *Daemon) putsDir() string { return filepath.Join(d.cfg.DataDir, "puts") }

func (d *Daemon) putPath(root chunk.ID) string {
	return filepath.Join(d.putsDir(), root.String()+".json")
}

// savePut records a finished put.
func (d *Daemon) savePut(root chunk.ID, rec putRecord) error {
	if err := os.MkdirAll(d.putsDir(), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	tmp := d.putPath(root) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, d.putPath(root))
}

func (d *Daemon) servePut(w http.ResponseWriter, r *http.Request) {
	var req api.PutRequest
	if !decodeRequest(w, r, &req) {
		return
	}
	ev := newEventStream(w)
	res, err := d.put(r.Context(), req, func(p eviction.PutProgress) {
		ev.progress(api.Event{Progress: &api.Progress{Done: p.BytesAcked, Total: p.Total, Stage: "push"}})
	})
	ev.end(api.Event{Put: res}, err)
}

// put cuts the file at req.Path into chunks, pushes them to the nearest
// req.Replicas connected peers and records the put for its removal.
func (d *Daemon) put(ctx context.Context, req api.PutRequest, progress func(eviction.PutProgress)) (*api.PutResult, error) {
	cfg := eviction.DefaultPutConfig()
	cfg.Name = filepath.Base(req.Path)
	if req.ChunkSize > 0 {
		cfg.ChunkSize = req.ChunkSize
	}
	cfg.Expire = req.Expire
	if err := cfg.Validate(); err != nil {
		return nil, invalid("", err)
	}
	f, size, err := openRegular(req.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	targets, err := d.nearestPeers(max(1, req.Replicas))
	if err != nil {
		return nil, err
	}
	d.log.Info("put started", "path", req.Path, "size", size, "targets", targets)
	res, err := eviction.Put(ctx, d.net, targets, f, size, cfg, progress)
	if err != nil {
		d.ops.WithLabelValues("put", "error").Inc()
		d.log.Warn("put failed", "path", req.Path, "err", err)
		return nil, err
	}
	d.ops.WithLabelValues("put", "ok").Inc()
	if err := d.savePut(res.Root, putRecord{ID: res.ID.String(), Targets: targets}); err != nil {
		// The copies stay at their targets until their expiry, if any.
		d.log.Warn("put record not saved: it cannot be removed", "cid", res.Root, "err", err)
	}
	d.log.Info("put done", "path", req.Path, "cid", res.Root, "duration", res.Duration)
	return &api.PutResult{
		CID: res.Root.String(), Size: res.Size, Chunks: res.Chunks, ZeroChunks: res.ZeroChunks, DupChunks: res.DupChunks,
		UniqueBytes: res.UniqueBytes, ManifestBytes: res.ManifestBytes, SentBytes: res.SentBytes, Duration: res.Duration,
	}, nil
}

// openRegular opens the regular file at the absolute path p.
func openRegular(p string) (*os.File, int64, error) {
	if !filepath.IsAbs(p) {
		return nil, 0, invalid("path", fmt.Errorf("%q is not absolute", p))
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, 0, invalid("path", err)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, invalid("path", fmt.Errorf("%s is not a regular file", p))
	}
	return f, fi.Size(), nil
}

// nearestPeers is the n nearest connected peers.
func (d *Daemon) nearestPeers(n int) ([]string, error) {
	peers := d.connectedPeers()
	if len(peers) < n {
		return nil, conflict("replicas", fmt.Errorf("%d replicas need %d connected peers; %d connected", n, n, len(peers)))
	}
	out := make([]string, n)
	for i, p := range peers[:n] {
		out[i] = p.Peer
	}
	return out, nil
}

// removePutTimeout bounds the wait for each target's answer.
const removePutTimeout = 30 * time.Second

func (d *Daemon) serveRemovePut(w http.ResponseWriter, r *http.Request) {
	res, err := d.removePut(r.Context(), r.PathValue("cid"))
	answer(w, res, err)
}

// removePut asks every target of a put this node made to drop it, and
// forgets the put once all have.
func (d *Daemon) removePut(ctx context.Context, cid string) (*api.RemovePutResult, error) {
	root, err := parseCID(cid)
	if err != nil {
		return nil, err
	}
	rec, id, err := d.loadPut(root)
	if err != nil {
		return nil, err
	}
	var errs error
	for _, t := range rec.Targets {
		p, err := peer.Decode(t)
		if err == nil {
			ctx, cancel := context.WithTimeout(ctx, removePutTimeout)
			err = d.node.Remove(ctx, p, id)
			cancel()
		}
		if err != nil {
			errs = errors.Join(errs, fmt.Errorf("%s: %w", t, err))
		}
	}
	if errs != nil {
		return nil, peersFailed(fmt.Errorf("remove put %s: %w", root, errs))
	}
	if err := os.Remove(d.putPath(root)); err != nil {
		return nil, err
	}
	d.log.Info("put removed", "cid", root, "targets", rec.Targets)
	return &api.RemovePutResult{CID: root.String(), Peers: rec.Targets}, nil
}

// loadPut reads the record of put root, and its ID.
func (d *Daemon) loadPut(root chunk.ID) (putRecord, wire.MigrationID, error) {
	var rec putRecord
	var id wire.MigrationID
	b, err := os.ReadFile(d.putPath(root))
	if errors.Is(err, os.ErrNotExist) {
		return rec, id, notFound(fmt.Errorf("no put %s made by this node", root))
	}
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	if err == nil {
		id, err = wire.ParseMigrationID(rec.ID)
	}
	if err != nil {
		return rec, id, fmt.Errorf("put record %s: %w", root, err)
	}
	return rec, id, nil
}
