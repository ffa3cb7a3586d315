// Package eviction is the source side of sg: it reads state, cuts it into
// chunks, hashes them, drops zeros and duplicates, and pushes the rest to
// peers until they acknowledge them as verified and stored.
//
//	ReaderAt ─► reader (sequential spans) ─► chunker ─► zero filter ─► hasher
//	         ─► dup filter (seen IDs) ─► batcher (≤ 1 MiB) ─┬─► target 1: S pipelined push streams
//	                                                       ├─► target 2 …
//	                                                       └─► (each batch to every replica target)
//	acks ─► manifest (blocks + root, pushed like data) ─► Result
//
// This package does not import libp2p: it pushes through the Network and
// Pusher interfaces, which node.PushStream satisfies (the daemon adapts the
// peer type), so tests and simnet can plug in any transport.
//
// Words: a target is a peer that receives pushes; replicas is how many
// targets must hold each chunk. Memory is bounded: a batch is at most
// BatchBytes, each target queues at most QueueBatches of them, and each
// stream keeps at most its window in flight.
//
// Status: this is the `sgctl put` pipeline (issue #2): every target gets
// every chunk. The scatter scheduler that balances the destination and
// intermediates by throughput and capacity (issue #3) builds on it.
package eviction
