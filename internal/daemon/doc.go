// Package daemon is sgnode's one wiring package: it builds, owns and stops
// the control socket, the chunk store, the libp2p node and the metrics
// endpoint, and serves the control API (package api) by calling eviction
// and fetch with node-backed adapters.
//
// Start order matters: the control socket is opened first (so a second
// sgnode on the same data directory fails before touching anything), then
// the store (which scans its segments), then the node (which starts
// accepting peers). Stop order is the reverse, after in-flight requests
// have been cancelled and have returned.
package daemon
