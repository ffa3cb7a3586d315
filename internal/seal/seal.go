package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/sgrelay/sg/internal/chunk"
)

// SecretSize is the length of a manifest secret.
const SecretSize = 32

// Secret seals one eviction's key blocks.
type Secret [SecretSize]byte

// IsZero reports whether s is unset (no sealing).
func (s Secret) IsZero() bool { return s == Secret{} }

// String is the hex form (it is a secret: print it only where a key may go).
func (s Secret) String() string { return hex.EncodeToString(s[:]) }

// ParseSecret parses the hex form.
func ParseSecret(h string) (Secret, error) {
	var s Secret
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != SecretSize {
		return s, fmt.Errorf("manifest secret: want %d hex digits", 2*SecretSize)
	}
	copy(s[:], b)
	if s.IsZero() {
		return s, errors.New("manifest secret: all zero")
	}
	return s, nil
}

const chunkKeyDomain = "sg seal chunk v1"

// ChunkKey derives the key of the chunk whose plaintext hashes to plain.
func ChunkKey(plain chunk.ID) [32]byte {
	var in [len(chunkKeyDomain) + chunk.Size]byte // on the stack: no allocation
	copy(in[:], chunkKeyDomain)
	copy(in[len(chunkKeyDomain):], plain[:])
	return sha256.Sum256(in[:])
}

// Chunk seals (or, being its own inverse, opens) src into dst, which must
// be at least as long; they may be the same slice. plain is the ID of the
// plaintext: src's when sealing, the result's when opening.
func Chunk(dst, src []byte, plain chunk.ID) {
	k := ChunkKey(plain)
	xor(dst, src, k[:], [aes.BlockSize]byte{})
}

// Sum seals data in place and returns the sealed chunk's ID and the
// plaintext's: the two names a sealed position has.
func Sum(data []byte) (sealed, plain chunk.ID) {
	plain = chunk.Sum(data)
	Chunk(data, data, plain)
	return chunk.Sum(data), plain
}

// Block seals (or opens) one key block of a manifest: block number n of
// region r, under the eviction's secret. Each (region, block) has its own
// IV, so no keystream repeats within an eviction.
func Block(dst, src []byte, s Secret, r, n int) {
	var iv [aes.BlockSize]byte
	binary.BigEndian.PutUint32(iv[0:], uint32(r))
	binary.BigEndian.PutUint32(iv[4:], uint32(n))
	xor(dst, src, s[:], iv)
}

func xor(dst, src, key []byte, iv [aes.BlockSize]byte) {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic("seal: " + err.Error()) // unreachable: keys are always 32 bytes
	}
	cipher.NewCTR(b, iv[:]).XORKeyStream(dst[:len(src)], src)
}
