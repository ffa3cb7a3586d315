package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"
)

// VMRegion is one image of a registered VM.
type VMRegion struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// VM is a VM this node can evict.
type VM struct {
	Name    string     `json:"name"`
	Driver  string     `json:"driver"`
	Regions []VMRegion `json:"regions"`
	QMP     string     `json:"qmp,omitempty"`  // qemu: the guest's monitor
	Args    []string   `json:"args,omitempty"` // qemu: its command line
}

// AddVMRequest registers a VM: from images on disk (the files driver), or
// a running QEMU guest by its QMP socket (the qemu driver).
type AddVMRequest struct {
	Name    string   `json:"name"`
	Mem     []string `json:"mem,omitempty"`   // absolute paths
	Disks   []string `json:"disks,omitempty"` // absolute paths
	State   string   `json:"state,omitempty"`
	QEMUQMP string   `json:"qemu_qmp,omitempty"` // absolute path of the guest's QMP socket
}

// EvictRequest asks the node to evict VMs to a destination.
type EvictRequest struct {
	VMs       []string `json:"vms"`
	To        string   `json:"to"`            // destination peer ID (or a unique part of one)
	Via       []string `json:"via,omitempty"` // intermediates; empty: every connected peer with free capacity
	Replicas  int      `json:"replicas,omitempty"`
	Direct    bool     `json:"direct,omitempty"`
	MaxRate   int64    `json:"max_rate,omitempty"` // bytes/s
	DiskChunk int      `json:"disk_chunk,omitempty"`
	// Encrypt seals every chunk at rest (convergent encryption): holders
	// other than the destination store only ciphertext, which still dedups.
	Encrypt bool `json:"encrypt,omitempty"`
	// Redundancy erasure-codes the chunks, "k+m" (e.g. "4+1"): any m
	// targets may be lost, for m/k more bytes sent. Not with Replicas.
	Redundancy string `json:"redundancy,omitempty"`
}

// EvictedVM is one VM's part of an eviction.
type EvictedVM struct {
	Name          string `json:"name"`
	MigrationID   string `json:"migration_id"`
	Manifest      string `json:"manifest_cid"`
	Bytes         int64  `json:"bytes"`
	Chunks        int64  `json:"chunks"`
	ZeroChunks    int64  `json:"zero_chunks"`
	DupWithin     int64  `json:"dup_within_vm"`
	DupAcross     int64  `json:"dup_across_vms"`
	ManifestBytes int64  `json:"manifest_bytes"`
	// ManifestSecret opens a sealed manifest (hex; encrypted evictions
	// only): what `sgctl gather --secret` needs to gather it elsewhere.
	ManifestSecret string `json:"manifest_secret,omitempty"`
	// SecretFile is where the source keeps ManifestSecret (mode 0600).
	SecretFile string `json:"secret_file,omitempty"`
}

// EvictResult reports a finished eviction.
type EvictResult struct {
	VMs           []EvictedVM   `json:"vms"`
	Destination   string        `json:"destination"`
	ET            time.Duration `json:"et_ns"`
	Bytes         int64         `json:"bytes"`
	Chunks        int64         `json:"chunks"`
	ZeroChunks    int64         `json:"zero_chunks"`
	DupWithin     int64         `json:"dup_within_vm"`
	DupAcross     int64         `json:"dup_across_vms"`
	AlreadyHeld   int64         `json:"already_held"`
	UniqueChunks  int64         `json:"unique_chunks"`
	UniqueBytes   int64         `json:"unique_bytes"`
	ManifestBytes int64         `json:"manifest_bytes"`
	// ManifestPushed is the manifest bytes pushed, all copies (a
	// destination that builds it from the placements is sent none).
	ManifestPushed int64            `json:"manifest_pushed"`
	SentBytes      map[string]int64 `json:"sent_bytes"`
	Repaired       int64            `json:"repaired"`
	EndgameBytes   int64            `json:"endgame_bytes"` // spare copies taken by idle targets at the end
	Replicas       int              `json:"replicas"`
	Redundancy     string           `json:"redundancy,omitempty"` // k+m, if erasure-coded
	ParityChunks   int64            `json:"parity_chunks,omitempty"`
	ParityBytes    int64            `json:"parity_bytes,omitempty"`
	EffectiveRate  float64          `json:"effective_rate"` // VM bytes per second of ET
	WireRate       float64          `json:"wire_rate"`      // pushed bytes per second of ET
}

// EvictProgress is an eviction's advance (in Event.Evict while running).
type EvictProgress struct {
	BytesRead  int64            `json:"bytes_read"`
	BytesTotal int64            `json:"bytes_total"`
	UniqueDone int64            `json:"unique_done"`
	Sent       map[string]int64 `json:"sent"`
	Elapsed    time.Duration    `json:"elapsed_ns"`
}

// Migration is one migration this node took part in.
type Migration struct {
	ID       string        `json:"id"`
	VM       string        `json:"vm"`
	Role     string        `json:"role"` // source or destination
	Peer     string        `json:"peer"` // the destination (as source) or the source
	State    string        `json:"state"`
	Error    string        `json:"error,omitempty"`
	Started  time.Time     `json:"started"`
	ET       time.Duration `json:"et_ns,omitempty"`
	Bytes    int64         `json:"bytes"`
	Chunks   int64         `json:"chunks"`
	Placed   int64         `json:"placed,omitempty"` // destination: positions placed so far
	Manifest string        `json:"manifest_cid,omitempty"`
	Result   *EvictResult  `json:"result,omitempty"` // source: the whole eviction's report
	Gather   *GatherReport `json:"gather,omitempty"` // destination: the gather's report
	Guest    *GuestReport  `json:"guest,omitempty"`  // destination: the guest resumed here
	// Retired: the migration has ended here and its state is gone (views
	// unmounted, exports closed, files closed); only this record is left,
	// its Gather.Lazy and Gather.NBD naming where the views were.
	Retired bool `json:"retired,omitempty"`
}

// PruneResult says how many migration records were removed.
type PruneResult struct {
	Removed int      `json:"removed"`
	IDs     []string `json:"ids,omitempty"`
}

// RemoveMigration deletes the record of an ended migration (ID or a
// prefix of at least 8 characters).
func (c *Client) RemoveMigration(ctx context.Context, id string) (*PruneResult, error) {
	resp, err := c.do(ctx, http.MethodDelete, "/v1/migrations/"+url.PathEscape(id), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out PruneResult
	return &out, decodeBody(resp, &out)
}

// PruneMigrations deletes the records of every ended migration.
func (c *Client) PruneMigrations(ctx context.Context) (*PruneResult, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v1/migrations/prune", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out PruneResult
	return &out, decodeBody(resp, &out)
}

// GuestReport is a guest resumed at the destination (qemu driver).
type GuestReport struct {
	Driver string `json:"driver"`
	State  string `json:"state"` // starting, running or failed
	Error  string `json:"error,omitempty"`
	PID    int    `json:"pid,omitempty"`
	QMP    string `json:"qmp,omitempty"`
	Serial string `json:"serial,omitempty"`
	RunDir string `json:"run_dir,omitempty"`
	// ResumedAfter is the migration's start here to the guest running.
	ResumedAfter time.Duration `json:"resumed_after_ns,omitempty"`
	// Downtime is the pause at the source to the guest running here.
	Downtime time.Duration `json:"downtime_ns,omitempty"`
	// Local: the gather completed and the guest was moved onto the
	// gathered local files (SettleDowntime is that move's pause); it no
	// longer needs sgnode's views.
	Local          bool          `json:"local"`
	SettleDowntime time.Duration `json:"settle_downtime_ns,omitempty"`
}

// Guest states.
const (
	GuestStarting = "starting"
	GuestRunning  = "running"
	GuestFailed   = "failed"
)

// GatherReport is a destination's view of one migration.
type GatherReport struct {
	Complete       bool          `json:"complete"`
	TMT            time.Duration `json:"tmt_ns"`
	FirstDemand    time.Duration `json:"first_demand_ns"`
	DemandReads    int64         `json:"demand_reads"`
	DemandHits     int64         `json:"demand_hits"`
	NetworkFaults  int64         `json:"network_faults"`
	LocalChunks    int64         `json:"local_chunks"`
	KeptChunks     int64         `json:"kept_chunks"`    // resumed after a restart: already in the files
	RebuiltChunks  int64         `json:"rebuilt_chunks"` // decoded from their stripes: no holder had them
	PrefetchChunks int64         `json:"prefetch_chunks"`
	// PrefetchedDuringScatter is bytes prefetched before the source was
	// done: around guest faults, or all in order when the source let this
	// destination pull from the relays during the scatter (Pulled).
	PrefetchedDuringScatter int64                    `json:"prefetched_during_scatter"`
	Pulled                  bool                     `json:"pulled_during_scatter,omitempty"`
	DemandChunks            int64                    `json:"demand_chunks"`
	SourceChunks            int64                    `json:"source_chunks"`
	Hedged                  int64                    `json:"hedged"`
	FetchedBytes            map[string]int64         `json:"fetched_bytes"`
	LatencyP50              map[string]time.Duration `json:"latency_p50_ns"`
	LatencyP99              map[string]time.Duration `json:"latency_p99_ns"`
	Files                   []string                 `json:"files"`
	Lazy                    string                   `json:"lazy_dir,omitempty"`
	NBD                     map[string]string        `json:"nbd,omitempty"` // disk region → unix socket
	ChunksTotal             int64                    `json:"chunks_total"`
	ChunksPresent           int64                    `json:"chunks_present"`
	ReleasedHolders         int                      `json:"released_holders"`
}

// Migration states.
const (
	StateRunning = "running"
	StateDone    = "done"
	StateFailed  = "failed"
)

// AddVM registers a VM.
func (c *Client) AddVM(ctx context.Context, req AddVMRequest) (*VM, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v1/vms", req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var v VM
	return &v, decodeBody(resp, &v)
}

// VMs lists registered VMs.
func (c *Client) VMs(ctx context.Context) ([]VM, error) {
	var out []VM
	return out, c.getJSON(ctx, "/v1/vms", &out)
}

// RemoveVM forgets a VM (its images stay on disk).
func (c *Client) RemoveVM(ctx context.Context, name string) error {
	resp, err := c.do(ctx, http.MethodDelete, "/v1/vms/"+url.PathEscape(name), nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// Evict runs an eviction; progress (may be nil) sees its advance.
func (c *Client) Evict(ctx context.Context, req EvictRequest, progress func(EvictProgress)) (*EvictResult, error) {
	ev, err := c.streamEvents(ctx, "/v1/evict", req, func(ev *Event) {
		if ev.EvictProgress != nil && progress != nil {
			progress(*ev.EvictProgress)
		}
	})
	if err != nil {
		return nil, err
	}
	if ev.Evict == nil {
		return nil, errors.New("sgnode ended the eviction without a result")
	}
	return ev.Evict, nil
}

// Migrations lists migrations, oldest first.
func (c *Client) Migrations(ctx context.Context) ([]Migration, error) {
	var out []Migration
	return out, c.getJSON(ctx, "/v1/migrations", &out)
}

// VerifyRequest asks how safely the chunks of a manifest are held.
type VerifyRequest struct {
	CID   string `json:"cid"`
	Fetch bool   `json:"fetch,omitempty"` // also fetch and re-hash every copy
}

// VerifyResult reports it.
type VerifyResult struct {
	Name           string           `json:"name"`
	Bytes          int64            `json:"bytes"`
	Chunks         int64            `json:"chunks"`
	ZeroChunks     int64            `json:"zero_chunks"`
	DistinctChunks int64            `json:"distinct_chunks"`
	MinHolders     int              `json:"min_holders"`
	Holders        map[int]int64    `json:"holders"`          // holder count → distinct chunks
	HoldersPerPeer map[string]int64 `json:"holders_per_peer"` // peer → distinct chunks held
	CopiesFetched  int64            `json:"copies_fetched"`
	BadCopies      int64            `json:"bad_copies"`
	Vanished       int64            `json:"vanished"`
	Stripes        int64            `json:"stripes,omitempty"`          // erasure-coded manifests
	MinStripeSpare int              `json:"min_stripe_spare,omitempty"` // fewest shards held beyond k
	// Tolerates is how many holders may be lost with every chunk still
	// held or decodable from its stripe.
	Tolerates int `json:"tolerates"`
}

// Verify asks the node to check a manifest's chunks across its peers.
func (c *Client) Verify(ctx context.Context, req VerifyRequest) (*VerifyResult, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v1/verify", req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var v VerifyResult
	return &v, decodeBody(resp, &v)
}

// GatherRequest asks the node to gather an existing manifest from peers
// (default: every connected peer that holds its root).
type GatherRequest struct {
	CID    string   `json:"cid"`
	From   []string `json:"from,omitempty"`
	Secret string   `json:"secret,omitempty"` // opens a sealed manifest (hex)
}

// Gather runs a gather; progress (may be nil) sees chunks present of total.
func (c *Client) Gather(ctx context.Context, req GatherRequest, progress func(Progress)) (*GatherReport, error) {
	ev, err := c.stream(ctx, "/v1/gather", req, progress)
	if err != nil {
		return nil, err
	}
	if ev.Gather == nil {
		return nil, errors.New("sgnode ended the gather without a report")
	}
	return ev.Gather, nil
}
