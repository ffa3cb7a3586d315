// Package workload generates VM images for tests, benchmarks and
// experiments: memory and disk images whose pages are, in chosen
// fractions, zero, shared with every VM of the same base image, repeated
// within the VM, or unique. Output is a pure function of the Spec.
//
// How a page is classed: a hash of (BaseSeed, index) first decides whether
// the page is shared, so VMs of one base agree on which pages they share
// and on their content (clones of one image keep kernel and libraries at
// the same places). The VM's own Seed then classes the remaining pages as
// zero, repeated (drawn from a small pool, so each repeats many times) or
// unique.
package workload

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// Spec describes one VM's images. The TOML keys are those of simnet's
// scenario files, which write the two sizes with units ("64MiB") in
// fields of their own.
type Spec struct {
	Seed       uint64  `toml:"seed"`        // this VM
	BaseSeed   uint64  `toml:"base_seed"`   // its base image: VMs with the same BaseSeed share pages
	MemSize    int64   `toml:"-"`           // bytes; a multiple of PageSize
	DiskSize   int64   `toml:"-"`           // bytes; a multiple of DiskBlock (0: no disk)
	PageSize   int     `toml:"page_size"`   // memory page size (4096)
	DiskBlock  int     `toml:"disk_block"`  // disk chunk size (65536)
	ZeroFrac   float64 `toml:"zero_frac"`   // of all pages
	SharedFrac float64 `toml:"shared_frac"` // of all pages
	RepeatFrac float64 `toml:"repeat_frac"` // of all pages
	RepeatPool int     `toml:"repeat_pool"` // distinct repeated pages (default 64)
}

// Class is what a page is.
type Class uint8

// Page classes.
const (
	Unique Class = iota
	Zero
	Shared
	Repeated
)

// Validate reports the first thing wrong with s.
func (s Spec) Validate() error {
	switch {
	case s.PageSize <= 0 || s.MemSize%int64(s.PageSize) != 0:
		return fmt.Errorf("workload: memory size %d is not a multiple of page size %d", s.MemSize, s.PageSize)
	case s.DiskSize > 0 && (s.DiskBlock <= 0 || s.DiskSize%int64(s.DiskBlock) != 0):
		return fmt.Errorf("workload: disk size %d is not a multiple of block size %d", s.DiskSize, s.DiskBlock)
	case s.ZeroFrac < 0 || s.SharedFrac < 0 || s.RepeatFrac < 0 || s.ZeroFrac+s.SharedFrac+s.RepeatFrac > 1:
		return fmt.Errorf("workload: fractions %.2f+%.2f+%.2f must be non-negative and sum to at most 1", s.ZeroFrac, s.SharedFrac, s.RepeatFrac)
	}
	return nil
}

// mix is SplitMix64: a fast, well-distributed hash of a 64-bit value.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

func unit(x uint64) float64 { return float64(x>>11) / (1 << 53) }

// region tags keep memory and disk pages apart.
const (
	tagMem  = 1
	tagDisk = 2
)

// classify returns the class of page idx of a region, and the key its
// content is derived from.
func (s Spec) classify(tag, idx uint64) (Class, uint64) {
	base, seed := mix(s.BaseSeed^0xba5e), mix(s.Seed^0x5eed)
	if unit(mix(base^tag<<56^mix(idx))) < s.SharedFrac {
		return Shared, mix(base ^ tag<<56 ^ mix(idx) ^ 1)
	}
	rest := 1 - s.SharedFrac
	if rest <= 0 {
		return Unique, 0
	}
	u := unit(mix(seed^tag<<56^mix(idx))) * rest
	pool := uint64(max(1, s.RepeatPool))
	if s.RepeatPool == 0 {
		pool = 64
	}
	switch {
	case u < s.ZeroFrac:
		return Zero, 0
	case u < s.ZeroFrac+s.RepeatFrac:
		return Repeated, mix(seed ^ tag<<56 ^ mix(mix(idx)%pool) ^ 2)
	}
	return Unique, mix(seed ^ tag<<56 ^ mix(idx) ^ 3)
}

// fill writes a page's content: non-zero pseudo-random bytes from key.
func fill(page []byte, key uint64) {
	x := key | 1
	for i := 0; i+8 <= len(page); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(page[i:], x)
	}
	binary.LittleEndian.PutUint64(page, key|1<<63) // never all zero
}

// Counts is how many pages of each class a region has.
type Counts struct {
	Pages, Zero, Shared, Repeated, Unique int64
	// DistinctRepeated is how many different repeated pages occur.
	DistinctRepeated int64
}

// Count classes every page of both regions without generating them.
func (s Spec) Count() (mem, disk Counts) {
	count := func(tag uint64, pages int64) Counts {
		var c Counts
		seen := map[uint64]bool{}
		for i := range pages {
			c.Pages++
			class, key := s.classify(tag, uint64(i))
			switch class {
			case Zero:
				c.Zero++
			case Shared:
				c.Shared++
			case Repeated:
				c.Repeated++
				if !seen[key] {
					seen[key] = true
					c.DistinctRepeated++
				}
			default:
				c.Unique++
			}
		}
		return c
	}
	mem = count(tagMem, s.MemSize/int64(s.PageSize))
	if s.DiskSize > 0 {
		disk = count(tagDisk, s.DiskSize/int64(s.DiskBlock))
	}
	return mem, disk
}

// Write generates the memory image into mem and the disk image into disk
// (which may be nil when DiskSize is 0).
func (s Spec) Write(mem, disk io.Writer) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if err := s.writeRegion(mem, tagMem, s.MemSize, s.PageSize); err != nil {
		return fmt.Errorf("workload: memory image: %w", err)
	}
	if s.DiskSize > 0 {
		if err := s.writeRegion(disk, tagDisk, s.DiskSize, s.DiskBlock); err != nil {
			return fmt.Errorf("workload: disk image: %w", err)
		}
	}
	return nil
}

func (s Spec) writeRegion(w io.Writer, tag uint64, size int64, page int) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	buf := make([]byte, page)
	for i := range size / int64(page) {
		class, key := s.classify(tag, uint64(i))
		if class == Zero {
			clear(buf)
		} else {
			fill(buf, key)
		}
		if _, err := bw.Write(buf); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// WriteFiles generates the images into files at memPath and diskPath.
func (s Spec) WriteFiles(memPath, diskPath string) error {
	mf, err := os.Create(memPath)
	if err != nil {
		return err
	}
	defer mf.Close()
	var df *os.File
	if s.DiskSize > 0 {
		if df, err = os.Create(diskPath); err != nil {
			return err
		}
		defer df.Close()
	}
	var dw io.Writer
	if df != nil {
		dw = df
	}
	if err := s.Write(mf, dw); err != nil {
		return err
	}
	if df != nil {
		if err := df.Close(); err != nil {
			return err
		}
	}
	return mf.Close()
}

// Memory is the memory image, generated on demand at any offset.
func (s Spec) Memory() io.ReaderAt { return image{s, tagMem, s.MemSize, s.PageSize} }

// Disk is the disk image (empty when DiskSize is 0), generated on demand.
func (s Spec) Disk() io.ReaderAt { return image{s, tagDisk, s.DiskSize, s.DiskBlock} }

// image generates a region's pages as they are read, so experiments can
// evict VMs larger than they could afford to keep in memory.
type image struct {
	s    Spec
	tag  uint64
	size int64
	page int
}

func (im image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("workload: negative offset %d", off)
	}
	if off >= im.size {
		return 0, io.EOF
	}
	n := 0
	var buf []byte
	for n < len(p) && off < im.size {
		idx, in := off/int64(im.page), int(off%int64(im.page))
		want := min(len(p)-n, im.page-in)
		want = int(min(int64(want), im.size-off))
		class, key := im.s.classify(im.tag, uint64(idx))
		dst := p[n : n+want]
		switch {
		case class == Zero:
			clear(dst)
		case in == 0 && want == im.page:
			fill(dst, key)
		default:
			if buf == nil {
				buf = make([]byte, im.page)
			}
			fill(buf, key)
			copy(dst, buf[in:])
		}
		n += want
		off += int64(want)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
