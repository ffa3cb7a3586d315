// Package eviction is the source side of sg: it reads state, cuts it into
// chunks, hashes them, drops zeros and duplicates, and pushes the rest to
// peers until they acknowledge them as verified and stored.
//
//	ReaderAt ─► reader (sequential spans) ─► chunker ─► zero filter ─► hasher
//	         ─► dup filter (seen IDs) ─► batcher (256 KiB) ─┬─► target 1: S pipelined push streams
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
// Options that change what travels: Seal (--encrypt) seals each chunk in
// the hasher (internal/seal: convergent, so dedup still works) and names it
// by its ciphertext; Redundancy (--redundancy k+m) replaces replicas with
// stripes of k chunks and m parity chunks cut by the sequencer (stripe.go):
//
//	new distinct chunks ─► lanes 0..k-1 of a group ─(Reed-Solomon per stripe)─► lanes k..k+m-1
//	a target takes a whole lane, never two shards of one stripe
//
// The scheduler (schedule.go) sends the destination what it can take and
// the relays the rest; `sgctl put` (put.go) sends every chunk to every
// target.
package eviction
