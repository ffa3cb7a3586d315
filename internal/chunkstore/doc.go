// Package chunkstore is sg's content-addressed chunk store.
//
// Words:
//
//   - tier: one place chunks live, behind the Tier interface. Memory keeps
//     chunks in RAM up to a byte budget; Disk keeps them in append-only
//     segment files up to a byte budget.
//   - Store: the tiers together. A Put goes to memory until its budget is
//     reached, then spills to disk. Store adds pins and GC on top.
//   - pin: a claim by an owner (a migration) on chunks it still needs.
//     GC deletes every chunk no owner pins.
//   - segment: one append-only file of self-describing records
//     (magic, length, ID, CRC-32C of the data, CRC-32C of the header, data).
//
// Invariants:
//
//   - A tier trusts the ID it is given: whoever received the bytes from the
//     network has re-hashed them before Put (package node does).
//   - Every record read back from disk is checked against its CRC and its ID
//     before it is returned; a bad record is ErrCorrupt, never data.
//   - Disk is crash-safe without a journal: records are only appended, and on
//     open a scan rebuilds the index, dropping a torn or corrupt tail of the
//     last segment (truncating it) so it can never be served.
//   - Put is not durable until Sync returns: callers batch Puts and Sync once
//     per batch (group commit) before they acknowledge anything.
//   - Deletes are in memory until compaction rewrites the segment that held
//     the chunk: after a crash a deleted chunk may reappear. It is valid,
//     verified data and unpinned, so the next GC frees it again.
//   - The disk index costs at most 64 bytes per chunk (see index.go), so a
//     64 GiB VM of 4 KiB pages (16 M chunks) indexes in about 1 GiB.
package chunkstore
