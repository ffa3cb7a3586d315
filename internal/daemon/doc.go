// Package daemon is sgnode's one wiring package: it builds, owns and stops
// the control socket, the chunk store, the libp2p node with its part in
// migrations (internal/cluster) and the metrics endpoint, and serves the
// control API (package api) by calling eviction and fetch over the node.
//
// Start order matters: the control socket is opened first (so a second
// sgnode on the same data directory fails before touching anything), then
// the store (which scans its segments), then the node (which starts
// accepting peers). Stop order is the reverse, after in-flight requests
// have been cancelled and have returned.
//
// Each control handler decodes its request, calls one Daemon method and
// encodes what it returns, so that what an operation does can be read
// (and tested) apart from HTTP. A method refuses a request with a
// requestError, which carries the answer's status and the request field
// at fault; how to set that field is the client's to say.
package daemon
