package api

import "time"

// Tier is one chunk store tier's usage.
type Tier struct {
	Name   string `json:"name"`
	Chunks int64  `json:"chunks"`
	Bytes  int64  `json:"bytes"`
	Used   int64  `json:"used"`
	Budget int64  `json:"budget"`
}

// Status describes the local node.
type Status struct {
	PeerID  string        `json:"peer_id"`
	Addrs   []string      `json:"addrs"`
	Zone    string        `json:"zone,omitempty"`
	Uptime  time.Duration `json:"uptime_ns"`
	Tiers   []Tier        `json:"tiers"`
	Version string        `json:"version"`
}

// Peer is what the local node knows about another.
type Peer struct {
	ID        string        `json:"id"`
	Addrs     []string      `json:"addrs,omitempty"`
	Connected bool          `json:"connected"`
	Admitted  bool          `json:"admitted"`
	RTT       time.Duration `json:"rtt_ns"`
	Zone      string        `json:"zone,omitempty"`
	MemFree   uint64        `json:"mem_free"`
	DiskFree  uint64        `json:"disk_free"`
	Load      uint32        `json:"load"`
}

// PutRequest asks the node to cut a file into chunks and push them to
// Replicas connected peers (nearest first).
type PutRequest struct {
	Path      string `json:"path"` // absolute, readable by sgnode
	Replicas  int    `json:"replicas"`
	ChunkSize int    `json:"chunk_size,omitempty"` // 0: the default (64 KiB)
	// Expire ends the copies this long after the put (0: kept until
	// removed with DELETE /v1/puts/{cid}).
	Expire time.Duration `json:"expire_ns,omitempty"`
}

// RemovePutResult reports a put removed from the peers that hold it.
type RemovePutResult struct {
	CID   string   `json:"cid"`
	Peers []string `json:"peers"` // told to drop their copies
}

// PutResult reports a finished put.
type PutResult struct {
	CID           string           `json:"cid"`
	Size          int64            `json:"size"`
	Chunks        int64            `json:"chunks"`
	ZeroChunks    int64            `json:"zero_chunks"`
	DupChunks     int64            `json:"dup_chunks"`
	UniqueBytes   int64            `json:"unique_bytes"`
	ManifestBytes int64            `json:"manifest_bytes"`
	SentBytes     map[string]int64 `json:"sent_bytes"`
	Duration      time.Duration    `json:"duration_ns"`
}

// GetRequest asks the node to fetch the file whose manifest root is CID
// from the peers that hold it, and write it to Output.
type GetRequest struct {
	CID    string `json:"cid"`
	Output string `json:"output"` // absolute path; written atomically
}

// GetResult reports a finished get.
type GetResult struct {
	Output      string           `json:"output"`
	Size        int64            `json:"size"`
	Chunks      int64            `json:"chunks"`
	ZeroChunks  int64            `json:"zero_chunks"`
	LocalChunks int64            `json:"local_chunks"`
	Fetched     map[string]int64 `json:"fetched_bytes"`
	Retried     int64            `json:"retried"`
	Duration    time.Duration    `json:"duration_ns"`
}

// Progress is a long operation's advance.
type Progress struct {
	Done  int64  `json:"done"`
	Total int64  `json:"total"`
	Stage string `json:"stage,omitempty"`
}

// Event is one line of an NDJSON stream: exactly one field is set.
type Event struct {
	Progress      *Progress      `json:"progress,omitempty"`
	EvictProgress *EvictProgress `json:"evict_progress,omitempty"`
	Put           *PutResult     `json:"put,omitempty"`
	Get           *GetResult     `json:"get,omitempty"`
	Evict         *EvictResult   `json:"evict,omitempty"`
	Gather        *GatherReport  `json:"gather,omitempty"`
	Error         string         `json:"error,omitempty"`
}

// isProgress reports whether ev is a progress line rather than the end.
func (ev *Event) isProgress() bool { return ev.Progress != nil || ev.EvictProgress != nil }

// ErrorBody is the JSON body of a non-2xx answer.
type ErrorBody struct {
	Error string `json:"error"`
	// Field is the request field at fault, by its JSON name, when one
	// is: a client names its own way of setting it.
	Field string `json:"field,omitempty"`
}

// Error is a request the node refused, as Client returns it.
type Error struct {
	Status  int    // the HTTP status
	Field   string // as in ErrorBody; may be empty
	Message string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Message
	}
	return e.Message
}
