package daemon

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/fetch"
)

func (d *Daemon) serveGet(w http.ResponseWriter, r *http.Request) {
	var req api.GetRequest
	if !decodeRequest(w, r, &req) {
		return
	}
	ev := newEventStream(w)
	res, err := d.get(r.Context(), req, func(p fetch.Progress) {
		ev.progress(api.Event{Progress: &api.Progress{Done: p.BytesDone, Total: p.Total, Stage: "fetch"}})
	})
	ev.end(api.Event{Get: res}, err)
}

// get fetches the file whose manifest root is req.CID from the connected
// peers that hold it into req.Output (fetch.Get writes beside it and
// renames on success: a failed get leaves nothing that looks complete).
func (d *Daemon) get(ctx context.Context, req api.GetRequest, progress func(fetch.Progress)) (*api.GetResult, error) {
	root, err := parseCID(req.CID)
	if err != nil {
		return nil, err
	}
	if !filepath.IsAbs(req.Output) {
		return nil, invalid("output", fmt.Errorf("%q is not absolute", req.Output))
	}
	holders, err := d.holdersOf(ctx, root)
	if err != nil {
		return nil, err
	}
	d.log.Info("get started", "cid", req.CID, "output", req.Output, "holders", len(holders))
	res, err := fetch.Get(ctx, d.net, holders, d.store, root, req.Output, fetch.DefaultConfig(), progress)
	if err != nil {
		d.ops.WithLabelValues("get", "error").Inc()
		d.log.Warn("get failed", "cid", req.CID, "err", err)
		return nil, err
	}
	d.ops.WithLabelValues("get", "ok").Inc()
	d.log.Info("get done", "cid", req.CID, "output", req.Output, "duration", res.Duration)
	return &api.GetResult{
		Output: req.Output, Size: res.Size, Chunks: res.Chunks, ZeroChunks: res.ZeroChunks, LocalChunks: res.LocalChunks,
		Fetched: res.Fetched, Retried: res.Retried, Duration: res.Duration,
	}, nil
}
