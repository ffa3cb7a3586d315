// Package node is sg's libp2p host: QUIC transport only, a persistent
// Ed25519 identity, an allow-list of cluster members enforced at connection
// time, per-peer RTT and capacity, and the wire protocols.
//
// It is the transport and nothing above it: what a migration means to a
// destination or a source (gathers, demand reads from a snapshot) lives in
// internal/cluster, which the node calls through the interfaces of
// migrate.go (MigrationSink, DemandServer, ReleaseHandler). The node
// itself enforces what does not depend on them: who may push, hold,
// release and renew what, and how much.
//
// Protocols (frames from internal/wire):
//
//	/sg/push/3  client: Hold, Push...   server: PushAck per Push, in order
//	/sg/have/1  client: Have...         server: HaveAck per Have
//	/sg/get/1   client: Get...          server: GetAck per Get
//	/sg/info/1  client: Info            server: InfoAck
//	/sg/migrate/2  client: Open, then control frames; or Demand...;
//	            or one Release, Renew or Remove. server: an Ack (a
//	            DemandAck for a Demand) per frame
//
// Every request stream is pipelined: the client writes several requests
// before it reads the first answer, bounded by a window (reqStream). Demand
// Gets travel on their own streams, so they never queue behind prefetch.
//
// Trust: a peer is refused unless it is admitted (Config.Peers, Allow, or
// AllowAny). Admitted peers are still not trusted with
// bytes: a pushed chunk is stored under the ID hashed from its bytes (the
// ack's digest of those IDs tells the pusher whether they are the chunks it
// meant), and every fetched chunk is re-hashed before it is handed to the
// caller. A push is acknowledged only once stored and synced. Nor are they
// trusted with other peers' chunks: a push stream's Hold says for which
// migrations (and their destination) or which put its chunks are kept, and
// only that destination releases or renews them, only that putter removes
// them (holds.go).
//
// The handlers follow one shape: handleX owns the stream (Reset on error,
// Close on success) and serveX does the protocol work and returns an error.
package node
