// Package erasure is the Reed-Solomon code of sg's stripes (evict
// --redundancy k+m, see internal/manifest for their format): the source
// codes a stripe's parity chunks from its data chunks, and a destination
// decodes a lost chunk from any k of the stripe's shards. Both sides must
// use the very same code, which is why it lives here once.
//
// A shard is as long as the stripe's longest data chunk (its size); a
// shorter chunk, a region's last, is padded with zeros for the code.
package erasure

import (
	"fmt"
	"sync"

	"github.com/klauspost/reedsolomon"
)

// Code codes and decodes stripes of any shape, caching one encoder per
// (data, parity) shape: building one costs matrix work, and a region's
// last stripe may be shorter than the others. Safe for concurrent use
// (the encoders are).
type Code struct {
	mu  sync.Mutex
	enc map[[2]int]reedsolomon.Encoder
}

func (c *Code) encoder(k, m int) (reedsolomon.Encoder, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if enc, ok := c.enc[[2]int{k, m}]; ok {
		return enc, nil
	}
	enc, err := reedsolomon.New(k, m)
	if err != nil {
		return nil, fmt.Errorf("erasure code %d+%d: %w", k, m, err)
	}
	if c.enc == nil {
		c.enc = map[[2]int]reedsolomon.Encoder{}
	}
	c.enc[[2]int{k, m}] = enc
	return enc, nil
}

// Parity returns the m parity shards of a stripe's data chunks. They (and
// the padded copies of short chunks) live in the buffers of *pad, reused
// from call to call: valid until the next call with the same pad.
func (c *Code) Parity(data [][]byte, m int, pad *[][]byte) ([][]byte, error) {
	enc, err := c.encoder(len(data), m)
	if err != nil {
		return nil, err
	}
	size := 0
	for _, d := range data {
		size = max(size, len(d))
	}
	k := len(data)
	for len(*pad) < k+m {
		*pad = append(*pad, nil)
	}
	shards := make([][]byte, k+m)
	for i := range k + m {
		if i < k && len(data[i]) == size {
			shards[i] = data[i] // a full-size chunk is coded as it is
			continue
		}
		buf := (*pad)[i]
		if cap(buf) < size {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		if i < k {
			clear(buf[copy(buf, data[i]):])
		}
		(*pad)[i], shards[i] = buf, buf
	}
	if err := enc.Encode(shards); err != nil {
		return nil, fmt.Errorf("erasure code: %w", err)
	}
	return shards[k:], nil
}

// Decode fills the missing (nil) data shards of a stripe of k data shards
// then its parity shards, from any k present ones, each size bytes or
// shorter (padded here; shards is modified).
func (c *Code) Decode(shards [][]byte, k, size int) error {
	enc, err := c.encoder(k, len(shards)-k)
	if err != nil {
		return err
	}
	for i, s := range shards {
		if s == nil || len(s) == size {
			continue
		}
		if len(s) > size {
			return fmt.Errorf("stripe shard %d is %d bytes, the stripe's are %d", i, len(s), size)
		}
		shards[i] = append(s, make([]byte, size-len(s))...)
	}
	if err := enc.ReconstructData(shards); err != nil {
		return fmt.Errorf("decode stripe: %w", err)
	}
	return nil
}
