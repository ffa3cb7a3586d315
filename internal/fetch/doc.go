// Package fetch is the destination side of sg: it resolves a manifest and
// brings its chunks here from the peers that hold them.
//
// The Gatherer (gather*.go) is the one fetcher: for an incoming migration
// (post-copy: demand reads first, prefetch around faults, then the rest),
// for `sgctl gather` of an existing manifest, and for `sgctl get`, which
// is a gather of a one-region manifest into a directory beside the output
// and a rename (get.go):
//
//	root ID ─► ResolveManifest (root, then blocks, from the nearest holder that has them)
//	        ─► placements: every position at every holder
//	        ─► copy what the local store has; prefetch the rest from the
//	           holder expected to answer first (pipelined Get streams)
//	        ─► verify (re-hashed by the transport) ─► write at every position
//
// A chunk a holder does not have, or serves with the wrong bytes, is asked
// of another; the gather fails (ErrUnavailable) only when every holder has
// been tried. This package does not import libp2p: node.GetStream
// satisfies Getter and cluster.Net adapts the peer type. A sealed
// migration's chunks are opened with their plain IDs as they are written
// to the files; a chunk of an erasure-coded one that no holder can provide
// is decoded from its stripe (rebuild.go).
package fetch
