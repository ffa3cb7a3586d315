package node

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/ratelimit"
)

// What the layers above the transport (internal/cluster) need of a node
// beyond its protocols: its configuration, the pace it takes chunks at,
// where it registers metrics, and word of chunks deleted behind its back.

// Config returns the configuration n was started with.
func (n *Node) Config() Config { return n.cfg }

// Ingest is the limiter that paces what this node takes in (IngestRate):
// a gather fetching chunks here spends from it as pushes do.
func (n *Node) Ingest() *ratelimit.Limiter { return n.ingest }

// Registry is where n's metrics are registered; a layer above adds its
// own collectors there so that one scrape sees them all.
func (n *Node) Registry() prometheus.Registerer { return n.m.reg }

// Deleted tells n that its store no longer holds id (its owner deleted
// it): the chunk stops counting against the quota of the peer that pushed it.
func (n *Node) Deleted(id chunk.ID) { n.quota.forget(id) }
