// Package seal is sg's encryption at rest on relays: convergent encryption
// of chunks, and secret-key encryption of the manifest's key blocks.
//
// Words:
//
//   - plain ID: the chunk ID (SHA-256) of a chunk's plaintext.
//   - chunk key: SHA-256("sg seal chunk v1" || plain ID). Every holder of
//     the same plaintext derives the same key, so the same page of two VMs
//     seals to the same ciphertext and dedups on a relay that cannot read it.
//   - sealed chunk: the plaintext under AES-256-CTR with the chunk key and a
//     zero IV; as long as its plaintext, named by the ID of its ciphertext.
//     A key is only ever used for one plaintext, so the fixed IV repeats no
//     keystream over different data.
//   - manifest secret: 32 random bytes per eviction, known to the source and
//     the destination only (it travels in the migration's Open, over TLS).
//     It seals the key blocks: the lists of plain IDs that a relay would
//     need to derive the chunk keys.
//
// Threat model. A relay (or anyone who reads its disk) holds only sealed
// chunks and sealed key blocks, so it learns no page's content. It does
// learn: the VM's name and region sizes (the manifest root is not sealed),
// which chunks of one or several VMs are equal (the price of dedup), and it
// can confirm a guess: whoever already has a page's plaintext can seal it
// and compare (the known limit of convergent encryption; a guest's secrets
// are not guessable pages). The destination and the source see plaintext.
// Integrity does not rest on this package: every chunk is still verified
// against the ID of the bytes that travel.
package seal
