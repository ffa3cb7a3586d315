// Package cluster is a node's part in migrations: it wires the eviction
// and fetch engines to the transport of internal/node.
//
// The node owns the protocols and calls back through the interfaces it
// declares (node.MigrationSink, node.DemandServer, node.ReleaseHandler);
// Roles implements them. As a destination it runs one gather per
// migration opened to it, admitted within the node's caps and the free
// disk where gathered VMs are written; as a source it serves demand reads
// from its running evictions' snapshots, to their destination only; as a
// holder it frees what finished migrations release. Net is the other
// direction: the node as eviction and fetch see the cluster, peers named
// by their string IDs.
//
// Keeping this above the transport lets node be tested, and reasoned
// about, without gathers, and lets eviction and fetch run over any
// transport (simnet's, or a test's).
package cluster
