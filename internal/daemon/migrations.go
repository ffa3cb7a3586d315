package daemon

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/eviction"
	"github.com/sgrelay/sg/internal/fetch"
)

// DefaultMigrationRecords is how many ended migrations `sgctl migrations`
// keeps when the setting is 0.
const DefaultMigrationRecords = 256

// outgoing records this node's evictions, and the incoming migrations
// retired here, for `sgctl migrations`. Running evictions are always
// listed; of the ended records (both roles) only the newest max are kept,
// so the list is bounded whatever the node's age.
type outgoing struct {
	mu      sync.Mutex
	max     int
	records []*api.Migration // oldest first
}

func newOutgoing(max int) *outgoing {
	if max <= 0 {
		max = DefaultMigrationRecords
	}
	return &outgoing{max: max}
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
	o.trimLocked()
}

// retired keeps the record of an incoming migration whose state is gone.
func (o *outgoing) retired(m api.Migration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	m.Retired = true
	o.records = append(o.records, &m)
	o.trimLocked()
}

// trimLocked drops the oldest ended records beyond max.
func (o *outgoing) trimLocked() {
	ended := 0
	for _, r := range o.records {
		if r.State != api.StateRunning {
			ended++
		}
	}
	if ended <= o.max {
		return
	}
	drop := ended - o.max
	o.records = slices.DeleteFunc(o.records, func(r *api.Migration) bool {
		if drop > 0 && r.State != api.StateRunning {
			drop--
			return true
		}
		return false
	})
}

// Errors of `sgctl migrations rm`.
var (
	errNoRecord      = errors.New("no such migration record")
	errAmbiguous     = errors.New("the ID prefix names several migrations")
	errStillRunning  = errors.New("the migration is still running: abort its eviction or wait for it")
	errShortIDPrefix = errors.New("give at least 8 characters of the migration ID")
)

// remove deletes the ended record whose ID starts with prefix.
func (o *outgoing) remove(prefix string) (string, error) {
	if len(prefix) < 8 {
		return "", errShortIDPrefix
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	at := -1
	for i, r := range o.records {
		if strings.HasPrefix(r.ID, prefix) {
			if at >= 0 {
				return "", errAmbiguous
			}
			at = i
		}
	}
	if at < 0 {
		return "", errNoRecord
	}
	if o.records[at].State == api.StateRunning {
		return "", errStillRunning
	}
	id := o.records[at].ID
	o.records = slices.Delete(o.records, at, at+1)
	return id, nil
}

// prune deletes every ended record and returns how many.
func (o *outgoing) prune() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := len(o.records)
	o.records = slices.DeleteFunc(o.records, func(r *api.Migration) bool { return r.State != api.StateRunning })
	return n - len(o.records)
}

// ended is how many records are of ended migrations.
func (o *outgoing) ended() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, r := range o.records {
		if r.State != api.StateRunning {
			n++
		}
	}
	return n
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
	retired := map[string]bool{}
	for _, m := range out {
		if m.Retired {
			retired[m.ID] = true
		}
	}
	for _, in := range d.roles.Incomings().List() {
		if !retired[in.ID.String()] { // being retired: its record says it
			out = append(out, d.incomingRecord(in))
		}
	}
	slices.SortFunc(out, func(a, b api.Migration) int { return a.Started.Compare(b.Started) })
	return out
}

// incomingRecord describes a migration opened here.
func (d *Daemon) incomingRecord(in fetch.IncomingStatus) api.Migration {
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
	return m
}

func (d *Daemon) serveRemoveMigration(w http.ResponseWriter, r *http.Request) {
	res, err := d.removeMigration(r.PathValue("id"))
	answer(w, res, err)
}

// removeMigration forgets the ended migration record whose ID starts
// with prefix.
func (d *Daemon) removeMigration(prefix string) (*api.PruneResult, error) {
	id, err := d.out.remove(prefix)
	switch {
	case errors.Is(err, errNoRecord) && d.openIncoming(prefix):
		return nil, conflict("", errors.New("the migration is still open here (gathering, or its views are in use): it is forgotten once retired"))
	case errors.Is(err, errNoRecord):
		return nil, notFound(err)
	case err != nil:
		return nil, conflict("", err)
	}
	return &api.PruneResult{Removed: 1, IDs: []string{id}}, nil
}

func (d *Daemon) servePruneMigrations(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, api.PruneResult{Removed: d.out.prune()})
}

// openIncoming reports whether an open incoming migration's ID starts with prefix.
func (d *Daemon) openIncoming(prefix string) bool {
	for _, in := range d.roles.Incomings().List() {
		if len(prefix) >= 8 && strings.HasPrefix(in.ID.String(), prefix) {
			return true
		}
	}
	return false
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
