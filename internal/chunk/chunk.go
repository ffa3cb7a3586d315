package chunk

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// Size is the number of bytes in an ID.
const Size = sha256.Size

// ID is the SHA-256 digest of a chunk. It is a value type so it can key maps
// and travel in frames without allocation.
type ID [Size]byte

// Zero is the marker for a zero chunk. No real chunk hashes to all zero bits.
var Zero ID

// ErrBadCID is returned when a CID is not a CIDv1 raw sha2-256 chunk ID.
var ErrBadCID = errors.New("not a sg chunk CID (want CIDv1, codec raw, sha2-256)")

// Sum hashes data. It does not allocate.
func Sum(data []byte) ID { return ID(sha256.Sum256(data)) }

// Verify reports whether data hashes to id.
func Verify(id ID, data []byte) bool { return Sum(data) == id }

// IsZero reports whether this ID is the zero-chunk marker.
func (id ID) IsZero() bool { return id == Zero }

// CID returns the ID as a CIDv1 (codec raw, multihash sha2-256).
func (id ID) CID() cid.Cid {
	mh := make([]byte, 2+Size)
	mh[0], mh[1] = multihash.SHA2_256, Size
	copy(mh[2:], id[:])
	return cid.NewCidV1(cid.Raw, multihash.Multihash(mh))
}

// String returns the CID's canonical string form.
func (id ID) String() string {
	if id.IsZero() {
		return "zero"
	}
	return id.CID().String()
}

// Short returns a short hex prefix for logs.
func (id ID) Short() string { return hex.EncodeToString(id[:6]) }

// FromCID converts a CID back to an ID, refusing any other codec or hash.
func FromCID(c cid.Cid) (ID, error) {
	if c.Version() != 1 || c.Type() != cid.Raw {
		return ID{}, ErrBadCID
	}
	dec, err := multihash.Decode(c.Hash())
	if err != nil || dec.Code != multihash.SHA2_256 || len(dec.Digest) != Size {
		return ID{}, ErrBadCID
	}
	return ID(dec.Digest), nil
}

// Parse parses a CID string into an ID.
func Parse(s string) (ID, error) {
	c, err := cid.Decode(s)
	if err != nil {
		return ID{}, fmt.Errorf("parse CID %q: %w", s, err)
	}
	id, err := FromCID(c)
	if err != nil {
		return ID{}, fmt.Errorf("parse CID %q: %w", s, err)
	}
	return id, nil
}

// IsZeroData reports whether every byte of data is zero. It compares eight
// bytes at a time: a 4 KiB page costs a few hundred nanoseconds, far less
// than hashing it, which is why zeros are filtered before the hasher.
func IsZeroData(data []byte) bool {
	for len(data) >= 64 {
		if le64(data[0:])|le64(data[8:])|le64(data[16:])|le64(data[24:])|
			le64(data[32:])|le64(data[40:])|le64(data[48:])|le64(data[56:]) != 0 {
			return false
		}
		data = data[64:]
	}
	for _, b := range data {
		if b != 0 {
			return false
		}
	}
	return true
}

func le64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}
