package chunkstore

import (
	"errors"

	"github.com/sgrelay/sg/internal/chunk"
)

// Errors returned by every tier.
var (
	ErrNotFound = errors.New("chunk not found")
	ErrFull     = errors.New("chunk store budget exhausted")
	ErrCorrupt  = errors.New("stored chunk failed verification")
	ErrClosed   = errors.New("chunk store closed")
	ErrTooLarge = errors.New("chunk too large")
)

// MaxChunkSize is the largest chunk any tier accepts.
const MaxChunkSize = 1 << 20

// Tier is one place chunks are kept. Implementations are safe for
// concurrent use.
type Tier interface {
	// Has reports whether the chunk is held.
	Has(id chunk.ID) bool
	// Get appends the chunk's bytes to dst[:0] and returns the result. The
	// caller owns the returned slice.
	Get(id chunk.ID, dst []byte) ([]byte, error)
	// Put stores data under id. Storing a chunk already held is a no-op.
	// The tier does not keep data after Put returns.
	Put(id chunk.ID, data []byte) error
	// Delete drops the chunk; deleting an absent chunk is a no-op.
	Delete(id chunk.ID) error
	// Range calls fn for every chunk held until fn returns false. fn must
	// not call back into the tier.
	Range(fn func(id chunk.ID, size int) bool)
	// Sync makes every completed Put durable.
	Sync() error
	// Stats reports usage.
	Stats() TierStats
	// Close releases the tier's resources.
	Close() error
}

// TierStats describes one tier's usage.
type TierStats struct {
	Name   string `json:"name"`
	Chunks int64  `json:"chunks"`
	Bytes  int64  `json:"bytes"`  // bytes of live chunk data
	Used   int64  `json:"used"`   // bytes counted against the budget (disk: including dead records and headers)
	Budget int64  `json:"budget"` // 0 means the tier takes nothing
}

// Free is the budget left.
func (s TierStats) Free() int64 { return max(0, s.Budget-s.Used) }
