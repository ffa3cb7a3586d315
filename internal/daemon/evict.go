package daemon

import (
	"context"
	"errors"
	"net/http"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/eviction"
	"github.com/sgrelay/sg/internal/fetch"
)

func (d *Daemon) serveEvict(w http.ResponseWriter, r *http.Request) {
	var req api.EvictRequest
	if !decodeRequest(w, r, &req) {
		return
	}
	ev := newEventStream(w)
	res, err := d.evict(r.Context(), req, func(p eviction.Progress) {
		ev.progress(api.Event{EvictProgress: &api.EvictProgress{BytesRead: p.BytesRead, BytesTotal: p.BytesTotal,
			UniqueDone: p.UniqueDone, Sent: p.Sent, Elapsed: p.Elapsed}})
	})
	ev.end(api.Event{Evict: res}, err)
}

// evict pauses the VMs named, scatters them towards their destination
// (serving its demand reads meanwhile) and releases them here once it
// holds them; if the eviction fails, they are resumed here.
func (d *Daemon) evict(ctx context.Context, req api.EvictRequest, progress func(eviction.Progress)) (*api.EvictResult, error) {
	cfg, err := d.evictionConfig(req)
	if err != nil {
		return nil, err
	}
	vms, err := d.pause(ctx, req.VMs, req.DiskChunk)
	if err != nil {
		return nil, err
	}
	cfg.Unchanged = vms.unchanged // no VM image written while it was read
	e, err := eviction.New(d.net, vms.vms, cfg)
	if err != nil {
		vms.resume(ctx)
		return nil, invalid("", err)
	}
	recs := d.out.start(e, vms.vms, cfg.Dest)
	stopDemand := d.roles.Evicting(e)
	d.log.Info("eviction started", "vms", req.VMs, "dest", cfg.Dest, "via", len(cfg.Via), "replicas", cfg.Replicas, "direct", cfg.Direct, "encrypt", cfg.Seal, "redundancy", cfg.Redundancy.String())
	res, err := e.Run(ctx, progress)
	var out *api.EvictResult
	if err == nil {
		out = evictResultToAPI(res, cfg.Dest)
		d.keepSecrets(out)
	}
	stopDemand()
	d.out.finish(recs, out, err)
	if err != nil {
		vms.resume(ctx)
		d.ops.WithLabelValues("evict", "error").Inc()
		d.log.Warn("eviction failed; VMs resumed at the source", "vms", req.VMs, "err", err)
		return nil, err
	}
	vms.release(ctx)
	d.ops.WithLabelValues("evict", "ok").Inc()
	d.evictET.Observe(res.ET.Seconds())
	d.evictBytes.Add(float64(res.Bytes))
	d.log.Info("eviction done", "vms", req.VMs, "et", res.ET, "bytes", res.Bytes, "unique", res.UniqueBytes)
	return out, nil
}

// evictionConfig is req as an eviction's configuration: the destination
// and intermediates chosen among the connected peers (by default every
// one with free capacity), checked before any VM is paused.
func (d *Daemon) evictionConfig(req api.EvictRequest) (eviction.Config, error) {
	if len(req.VMs) == 0 {
		return eviction.Config{}, invalid("vms", errors.New("no VM named"))
	}
	dest, err := d.resolvePeer("to", req.To)
	if err != nil {
		return eviction.Config{}, err
	}
	cfg := eviction.DefaultConfig(dest)
	cfg.Replicas, cfg.Direct, cfg.MaxRate, cfg.Seal, cfg.Log = max(1, req.Replicas), req.Direct, req.MaxRate, req.Encrypt, d.log
	cfg.Uplink = d.cfg.Node.Uplink
	if req.Redundancy != "" {
		if cfg.Redundancy, err = eviction.ParseRedundancy(req.Redundancy); err != nil {
			return eviction.Config{}, invalid("redundancy", err)
		}
	}
	if cfg.Via, err = d.intermediates(req, dest); err != nil {
		return eviction.Config{}, err
	}
	switch err := cfg.Validate(); {
	case errors.Is(err, eviction.ErrDirectReplicas):
		return eviction.Config{}, invalid("direct", err)
	case errors.Is(err, eviction.ErrRedundancyConflict):
		return eviction.Config{}, invalid("redundancy", err)
	case err != nil:
		return eviction.Config{}, invalid("", err)
	}
	return cfg, nil
}

// intermediates are the peers an eviction to dest scatters through: none
// when direct, those named, or every connected peer with free capacity.
func (d *Daemon) intermediates(req api.EvictRequest, dest string) ([]string, error) {
	var via []string
	switch {
	case req.Direct:
	case len(req.Via) > 0:
		for _, v := range req.Via {
			p, err := d.resolvePeer("via", v)
			if err != nil {
				return nil, err
			}
			via = append(via, p)
		}
	default:
		for _, p := range d.node.Peers() {
			if p.Connected && p.Admitted && p.ID.String() != dest && p.MemFree+p.DiskFree > 0 {
				via = append(via, p.ID.String())
			}
		}
	}
	return via, nil
}

func evictResultToAPI(res *eviction.Result, dest string) *api.EvictResult {
	out := &api.EvictResult{
		Destination: dest, ET: res.ET, Bytes: res.Bytes, Chunks: res.Chunks, ZeroChunks: res.ZeroChunks,
		DupWithin: res.DupWithin, DupAcross: res.DupAcross, AlreadyHeld: res.AlreadyHeld,
		UniqueChunks: res.UniqueChunks, UniqueBytes: res.UniqueBytes, ManifestBytes: res.ManifestBytes,
		ManifestPushed: res.ManifestPushed, SentBytes: res.SentBytes, Repaired: res.Repaired, EndgameBytes: res.EndgameBytes, Replicas: res.Replicas,
		EffectiveRate: res.EffectiveRate(), WireRate: res.WireRate(), ParityChunks: res.ParityChunks, ParityBytes: res.ParityBytes,
	}
	if res.Redundancy.On() {
		out.Redundancy = res.Redundancy.String()
	}
	for _, v := range res.VMs {
		ev := api.EvictedVM{Name: v.Name, MigrationID: v.MigrationID.String(), Manifest: v.Root.String(),
			Bytes: v.Bytes, Chunks: v.Chunks, ZeroChunks: v.ZeroChunks, DupWithin: v.DupWithin, DupAcross: v.DupAcross,
			ManifestBytes: v.ManifestBytes}
		if !v.Secret.IsZero() {
			ev.ManifestSecret = v.Secret.String()
		}
		out.VMs = append(out.VMs, ev)
	}
	return out
}

func (d *Daemon) serveVerify(w http.ResponseWriter, r *http.Request) {
	var req api.VerifyRequest
	if !decodeRequest(w, r, &req) {
		return
	}
	res, err := d.verify(r.Context(), req)
	answer(w, res, err)
}

// verify checks that every chunk of a manifest is held across the
// connected peers (and, with req.Fetch, intact).
func (d *Daemon) verify(ctx context.Context, req api.VerifyRequest) (*api.VerifyResult, error) {
	root, err := parseCID(req.CID)
	if err != nil {
		return nil, err
	}
	res, err := fetch.Verify(ctx, d.net, d.net, d.connectedPeers(), d.store, root, req.Fetch)
	if err != nil {
		return nil, conflict("", err)
	}
	return &api.VerifyResult{
		Name: res.Name, Bytes: res.Bytes, Chunks: res.Chunks, ZeroChunks: res.ZeroChunks, DistinctChunks: res.DistinctChunks,
		MinHolders: res.MinHolders, Holders: res.Holders, HoldersPerPeer: res.HoldersPerPeer,
		CopiesFetched: res.CopiesFetched, BadCopies: res.BadCopies, Vanished: res.Vanished,
		Stripes: res.Stripes, MinStripeSpare: res.MinStripeSpare, Tolerates: res.Tolerates,
	}, nil
}
