// Package simnet runs many real sg nodes in one process over simulated
// links, in virtual time.
//
// Each node is the real thing: node.Node (libp2p over quic-go), a
// chunkstore, the eviction pipeline and the gatherer, wired by cluster.Roles as
// the daemon wires them. Only the packets are simulated: every node's UDP
// socket is a github.com/marcopolo/simnet endpoint with its own uplink and
// downlink bandwidth and queue, per-pair one-way latency, optional loss, and
// links that can be cut or nodes killed at given times. quic-go discovers
// the path MTU over them as on a real host (see spareSocket).
//
// A scenario is a Topology: a Go value, or a TOML file read by
// LoadTopology (examples in internal/simnet/scenarios).
//
// Run must be called inside a testing/synctest bubble: time is then
// virtual, so a scenario's eviction time, total migration time and latencies
// depend on the simulated links only (CPU work takes no virtual time), and
// a run of minutes of network time takes seconds of wall time.
package simnet
