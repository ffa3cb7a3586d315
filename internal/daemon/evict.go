package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/eviction"
	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/vm"
	"github.com/sgrelay/sg/internal/vm/qemu"
)

func (d *Daemon) serveVMs(w http.ResponseWriter, _ *http.Request) {
	out := []api.VM{}
	for _, s := range d.vms.List() {
		out = append(out, vmToAPI(s))
	}
	writeJSON(w, http.StatusOK, out)
}

func vmToAPI(s vm.Spec) api.VM {
	v := api.VM{Name: s.Name, Driver: "files"}
	if s.QEMU != nil {
		v.Driver, v.QMP, v.Args = "qemu", s.QEMU.QMP, s.QEMU.Args
	}
	for _, r := range s.Regions {
		v.Regions = append(v.Regions, api.VMRegion{Name: r.Name, Kind: r.Kind.String(), Path: r.Path, Size: r.Size})
	}
	return v
}

func (d *Daemon) serveAddVM(w http.ResponseWriter, r *http.Request) {
	var req api.AddVMRequest
	if !decodeRequest(w, r, &req) {
		return
	}
	for _, p := range append(append(append([]string{}, req.Mem...), req.Disks...), req.State, req.QEMUQMP) {
		if p != "" && !filepath.IsAbs(p) {
			writeError(w, http.StatusBadRequest, fmt.Errorf("path %q is not absolute", p))
			return
		}
	}
	var spec vm.Spec
	var err error
	if req.QEMUQMP != "" {
		if len(req.Mem)+len(req.Disks) > 0 || req.State != "" {
			writeError(w, http.StatusBadRequest, errors.New("a QEMU guest (--qemu-qmp) takes its memory and disks from its command line: no --mem, --disk or --state"))
			return
		}
		spec, err = qemu.Inspect(r.Context(), req.Name, req.QEMUQMP)
	} else {
		spec, err = vm.NewFilesSpec(req.Name, req.Mem, req.Disks, req.State)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if err := d.vms.Add(spec); err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, vm.ErrExists) {
			code = http.StatusConflict
		}
		writeError(w, code, err)
		return
	}
	d.log.Info("VM registered", "vm", spec.Name, "regions", len(spec.Regions))
	writeJSON(w, http.StatusOK, vmToAPI(spec))
}

func (d *Daemon) serveRemoveVM(w http.ResponseWriter, r *http.Request) {
	if err := d.vms.Remove(r.PathValue("name")); err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, vm.ErrNotFound) {
			code = http.StatusNotFound
		}
		writeError(w, code, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// resolvePeer finds the connected peer named by s: a full peer ID, or a
// part of one that matches exactly one connected peer.
func (d *Daemon) resolvePeer(s string) (string, error) {
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
		return "", fmt.Errorf("%q matches no connected peer (see sgctl peers)", s)
	}
	return "", fmt.Errorf("%q matches %d connected peers; give more of the peer ID", s, len(matches))
}

func (d *Daemon) serveEvict(w http.ResponseWriter, r *http.Request) {
	var req api.EvictRequest
	if !decodeRequest(w, r, &req) {
		return
	}
	if len(req.VMs) == 0 {
		writeError(w, http.StatusBadRequest, errors.New("no VM named"))
		return
	}
	dest, err := d.resolvePeer(req.To)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("--to: %w", err))
		return
	}
	cfg := eviction.DefaultConfig(dest)
	cfg.Replicas, cfg.Direct, cfg.MaxRate, cfg.Seal, cfg.Log = max(1, req.Replicas), req.Direct, req.MaxRate, req.Encrypt, d.log
	cfg.Uplink = d.cfg.Node.Uplink
	if req.Redundancy != "" {
		if cfg.Redundancy, err = eviction.ParseRedundancy(req.Redundancy); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("--redundancy: %w", err))
			return
		}
	}
	if !req.Direct {
		if len(req.Via) > 0 {
			for _, v := range req.Via {
				p, err := d.resolvePeer(v)
				if err != nil {
					writeError(w, http.StatusBadRequest, fmt.Errorf("--via: %w", err))
					return
				}
				cfg.Via = append(cfg.Via, p)
			}
		} else {
			for _, p := range d.node.Peers() {
				if p.Connected && p.Admitted && p.ID.String() != dest && p.MemFree+p.DiskFree > 0 {
					cfg.Via = append(cfg.Via, p.ID.String())
				}
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	diskChunk := vm.DefaultDiskChunk
	if req.DiskChunk > 0 {
		diskChunk = req.DiskChunk
	}

	// Pause every VM first: a missing or changed image stops the eviction
	// before anything is sent.
	var drivers []vm.Driver
	var vms []eviction.VM
	var snaps []*vm.Snapshot
	// Resuming or releasing a VM must not depend on the client still
	// listening: an aborted sgctl (Ctrl-C) cancels the request's context.
	after := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(r.Context()), time.Minute)
	}
	resumeAll := func() {
		ctx, cancel := after()
		defer cancel()
		for i, s := range snaps {
			s.Close()
			if err := drivers[i].Resume(ctx); err != nil {
				d.log.Error("VM not resumed at the source after a failed eviction", "vm", s.VM, "err", err)
			}
		}
	}
	for _, name := range req.VMs {
		drv, err := d.driver(name)
		if err == nil {
			var snap *vm.Snapshot
			if snap, err = drv.Pause(r.Context()); err == nil {
				drivers, snaps = append(drivers, drv), append(snaps, snap)
				vms = append(vms, evictionVM(snap, diskChunk))
			}
		}
		if err != nil {
			resumeAll()
			code := http.StatusBadRequest
			if errors.Is(err, vm.ErrNotFound) {
				code = http.StatusNotFound
			}
			writeError(w, code, err)
			return
		}
	}
	cfg.Unchanged = func() error { // no VM image written while it was read
		for _, s := range snaps {
			if err := s.Unchanged(); err != nil {
				return fmt.Errorf("VM %s: %w", s.VM, err)
			}
		}
		return nil
	}
	e, err := eviction.New(d.node.Cluster(), vms, cfg)
	if err != nil {
		resumeAll()
		writeError(w, http.StatusBadRequest, err)
		return
	}
	recs := d.out.start(e, vms, dest)
	stopDemand := d.roles.Evicting(e)
	d.log.Info("eviction started", "vms", req.VMs, "dest", dest, "via", len(cfg.Via), "replicas", cfg.Replicas, "direct", cfg.Direct, "encrypt", cfg.Seal, "redundancy", cfg.Redundancy.String())
	ev := newEventStream(w)
	res, err := e.Run(r.Context(), func(p eviction.Progress) {
		ev.send(api.Event{EvictProgress: &api.EvictProgress{BytesRead: p.BytesRead, BytesTotal: p.BytesTotal,
			UniqueDone: p.UniqueDone, Sent: p.Sent, Elapsed: p.Elapsed}}, false)
	})
	var out *api.EvictResult
	if err == nil {
		out = evictResultToAPI(res, dest)
		d.keepSecrets(out)
	}
	stopDemand()
	d.out.finish(recs, out, err)
	if err != nil {
		resumeAll()
		d.ops.WithLabelValues("evict", "error").Inc()
		d.log.Warn("eviction failed; VMs resumed at the source", "vms", req.VMs, "err", err)
		ev.send(api.Event{Error: err.Error()}, true)
		return
	}
	for i, s := range snaps {
		s.Close()
		ctx, cancel := after()
		err := drivers[i].Release(ctx)
		cancel()
		if err != nil {
			d.log.Warn("release evicted VM", "vm", req.VMs[i], "err", err)
		}
	}
	d.ops.WithLabelValues("evict", "ok").Inc()
	d.evictET.Observe(res.ET.Seconds())
	d.evictBytes.Add(float64(res.Bytes))
	d.log.Info("eviction done", "vms", req.VMs, "et", res.ET, "bytes", res.Bytes, "unique", res.UniqueBytes)
	ev.send(api.Event{Evict: out}, true)
}

// driver returns the driver of a registered VM.
func (d *Daemon) driver(name string) (vm.Driver, error) {
	s, err := d.vms.Get(name)
	if err != nil {
		return nil, err
	}
	if s.QEMU != nil {
		return qemu.NewDriver(s, filepath.Join(d.cfg.DataDir, "qemu-state"), d.log)
	}
	return &vm.Files{Spec: s}, nil
}

func evictionVM(s *vm.Snapshot, diskChunk int) eviction.VM {
	v := eviction.VM{Name: s.VM}
	for _, r := range s.Regions {
		cs := diskChunk
		switch r.Kind.String() {
		case "memory":
			cs = vm.MemoryChunkSize
		case "state":
			cs = vm.StateChunkSize
		}
		v.Regions = append(v.Regions, eviction.Region{Name: r.Name, Kind: r.Kind, Size: r.Size, ChunkSize: cs, Data: r.ReaderAt})
	}
	return v
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
	root, ok := parseCID(w, req.CID)
	if !ok {
		return
	}
	peers := d.connectedPeers()
	res, err := fetch.Verify(r.Context(), d.node.Cluster(), d.node.Cluster(), peers, d.store, root, req.Fetch)
	if err != nil {
		writeError(w, http.StatusConflict, err)
		return
	}
	writeJSON(w, http.StatusOK, api.VerifyResult{
		Name: res.Name, Bytes: res.Bytes, Chunks: res.Chunks, ZeroChunks: res.ZeroChunks, DistinctChunks: res.DistinctChunks,
		MinHolders: res.MinHolders, Holders: res.Holders, HoldersPerPeer: res.HoldersPerPeer,
		CopiesFetched: res.CopiesFetched, BadCopies: res.BadCopies, Vanished: res.Vanished,
		Stripes: res.Stripes, MinStripeSpare: res.MinStripeSpare, Tolerates: res.Tolerates,
	})
}
