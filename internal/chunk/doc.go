// Package chunk is sg's chunk vocabulary: the ID of an immutable byte string,
// how it is hashed, how it maps to a CID, and the zero chunk.
//
// Words:
//
//   - ID: the SHA-256 digest of a chunk's bytes. It is the whole identity of a
//     chunk inside sg; a CID (v1, codec raw, multihash sha2-256) is the same
//     digest in the form other tools understand, built only at the edges
//     (CLI, API, logs) because building one allocates.
//   - zero chunk: a chunk of all zero bytes of any length. It is never hashed,
//     stored or sent; manifests mark it with Zero instead of an ID.
//
// Invariant: an ID names bytes only once those bytes have been hashed here
// (Sum). Nothing received from a peer is trusted before that.
package chunk
