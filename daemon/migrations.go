package daemon

import (
	"slices"
	"sync"
	"time"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/eviction"
	"github.com/sgrelay/sg/fetch"
)

// outgoing records this node's evictions for `sgctl migrations`.
type outgoing struct {
	mu      sync.Mutex
	records []*api.Migration
}

// start registers an eviction's migrations as running.
func (o *outgoing) start(e *eviction.Eviction, vms []eviction.VM, dest string) []*api.Migration {
	o.mu.Lock()
	defer o.mu.Unlock()
	var recs []*api.Migration
	for i, id := range e.MigrationIDs() {
		var bytes int64
		for _, r := range vms[i].Regions {
			bytes += r.Size
		}
		rec := &api.Migration{ID: id.String(), VM: vms[i].Name, Role: "source", Peer: dest,
			State: api.StateRunning, Started: time.Now(), Bytes: bytes}
		o.records = append(o.records, rec)
		recs = append(recs, rec)
	}
	return recs
}

// finish records the outcome.
func (o *outgoing) finish(recs []*api.Migration, res *api.EvictResult, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, rec := range recs {
		if err != nil {
			rec.State, rec.Error = api.StateFailed, err.Error()
			continue
		}
		rec.State, rec.ET, rec.Result = api.StateDone, res.ET, res
		rec.Chunks, rec.Manifest = res.VMs[i].Chunks, res.VMs[i].Manifest
	}
}

func (o *outgoing) list() []api.Migration {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]api.Migration, len(o.records))
	for i, r := range o.records {
		out[i] = *r
	}
	return out
}

// migrationsList merges outgoing and incoming migrations, oldest first.
func (d *Daemon) migrationsList() []api.Migration {
	out := d.out.list()
	for _, in := range d.roles.Incomings().List() {
		m := api.Migration{ID: in.ID.String(), VM: in.VM, Role: "destination", Peer: in.Source,
			State: api.StateRunning, Started: in.Opened, Bytes: in.Bytes, Chunks: in.Chunks, Placed: in.Placed}
		if in.Done {
			m.ET, m.Manifest = in.Finished.Sub(in.Opened), in.Root.String()
		}
		if g := d.roles.Gatherer(in.ID); g != nil {
			rep := g.Report()
			m.Gather = gatherReportToAPI(rep)
			m.Gather.Lazy = d.lazyDir(in.ID.String())
			m.Gather.NBD = d.views.nbdSockets(in.ID)
			m.Guest = d.guests.get(in.ID)
			switch {
			case rep.Err != "":
				m.State, m.Error = api.StateFailed, rep.Err
			case rep.Complete:
				m.State = api.StateDone
			}
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b api.Migration) int { return a.Started.Compare(b.Started) })
	return out
}

func gatherReportToAPI(r fetch.Report) *api.GatherReport {
	out := &api.GatherReport{
		Complete: r.Complete, TMT: r.TMT, FirstDemand: r.FirstDemand, DemandReads: r.DemandReads, DemandHits: r.DemandHits,
		NetworkFaults: r.NetworkFaults, LocalChunks: r.LocalChunks, KeptChunks: r.KeptChunks, RebuiltChunks: r.RebuiltChunks, PrefetchChunks: r.PrefetchChunks, DemandChunks: r.DemandChunks,
		PrefetchedDuringScatter: r.PrefetchedDuringScatter, Pulled: r.Pulled,
		SourceChunks: r.SourceChunks, Hedged: r.Hedged, FetchedBytes: r.FetchedBytes, Files: r.Paths,
		ChunksTotal: r.ChunksTotal, ChunksPresent: r.ChunksPresent, ReleasedHolders: r.ReleasedHolders,
		LatencyP50: map[string]time.Duration{}, LatencyP99: map[string]time.Duration{},
	}
	for p, v := range r.LatencyP50 {
		out.LatencyP50[p] = v
	}
	for p, v := range r.LatencyP99 {
		out.LatencyP99[p] = v
	}
	return out
}
