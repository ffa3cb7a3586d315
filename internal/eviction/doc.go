// Package eviction is the source side of sg: it reads state, cuts it into
// chunks, hashes them, drops zeros and duplicates, and pushes the rest to
// peers until they acknowledge them as verified and stored.
//
// One producer (produce.go) reads, hashes and filters for both users of
// the package, and hands the new distinct chunks to a sink:
//
//	ReaderAt ─► reader (sequential spans; a short read fails) ─► hashers (×N, sealing if asked)
//	         ─► zero filter ─► dup filter (the sink's index) ─► sink
//
//	eviction: sequencer (ledger, batches ≤ BatchBytes, stripes) ─► have queries ─► scheduler
//	          (schedule.go: the destination what it can take, relays the rest)
//	put:      every batch to every target (scatter.go)
//
//	acks ─► manifest (blocks + root, pushed like data) ─► Result
//
// This package does not import libp2p: it pushes through the Network and
// Pusher interfaces, which node.PushStream satisfies (cluster.Net adapts
// the peer type), so tests can plug in any transport.
//
// Words: a target is a peer that receives pushes; replicas is how many
// targets must hold each chunk. Memory is bounded: a batch is at most
// BatchBytes, each target queues at most QueueBatches of them, and each
// stream keeps at most its window in flight.
//
// Options that change what travels: Seal seals each chunk in the hasher
// (internal/seal: convergent, so dedup still works) and names it by its
// ciphertext; Redundancy (k+m) replaces replicas with stripes of k chunks
// and m parity chunks cut by the sequencer (stripe.go):
//
//	new distinct chunks ─► lanes 0..k-1 of a group ─(Reed-Solomon per stripe)─► lanes k..k+m-1
//	a target takes a whole lane, never two shards of one stripe
package eviction
