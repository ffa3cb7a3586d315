// Package fetch is the destination side of sg: it resolves a manifest and
// brings its chunks here from the peers that hold them.
//
//	root ID ─► resolve (root, then blocks, from the nearest holder that has them)
//	        ─► plan: distinct non-zero chunks not already in the local store
//	        ─► shared work queue ◄── one worker per holder (pipelined Get
//	           stream): nearest holders start first, faster holders take more
//	        ─► verify (re-hashed by the transport) ─► write at every offset
//	        ─► read back and verify the whole output against the manifest
//
// A chunk a holder does not have, or serves with the wrong bytes, goes back
// to the queue for another holder; it fails only when every holder has
// been tried. This package does not import libp2p: node.GetStream
// satisfies Getter and cluster.Net adapts the peer type.
//
// That is `sgctl get` (get.go). The Gatherer (gather*.go) is the post-copy
// fetcher of an incoming migration: demand reads first, prefetch around
// faults, then the rest. A sealed migration's chunks (evict --encrypt)
// are opened with their plain IDs as they are written to the files; a
// chunk of an erasure-coded one (evict --redundancy) that no holder can
// provide is decoded from its stripe (rebuild.go).
package fetch
