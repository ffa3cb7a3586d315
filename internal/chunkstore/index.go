package chunkstore

import (
	"encoding/binary"

	"github.com/sgrelay/sg/internal/chunk"
)

// location is where a record lives on disk.
type location struct {
	seg uint32 // segment number
	off uint32 // record offset in the segment (segments are < 4 GiB)
	n   uint32 // data length
}

type indexEntry struct {
	id  chunk.ID
	loc location
}

// index maps chunk IDs to disk locations within 64 bytes per chunk.
//
// A Go map[chunk.ID]location spends 45 bytes a slot and, right after it
// doubles, half its slots are empty: about 100 bytes a chunk at worst.
// Here entries (44 bytes) live densely in fixed pages that never move, and
// an open-addressing table (linear probing, load ≤ 3/4) holds 4-byte entry
// numbers: at worst 44 + 4/(3/8) ≈ 55 bytes a chunk, plus 4 bytes for each
// freed entry awaiting reuse.
type index struct {
	pages [][]indexEntry
	n     int      // entries in use
	next  uint32   // entries ever allocated (pages fill up to this)
	free  []uint32 // freed entry numbers, reused before next grows
	slots []uint32 // entry number + 1; 0 is empty
	mask  uint64
}

const indexPageLen = 4096

func newIndex() *index {
	return &index{slots: make([]uint32, 1024), mask: 1023}
}

func (x *index) entry(e uint32) *indexEntry {
	return &x.pages[e/indexPageLen][e%indexPageLen]
}

// home is the preferred slot: SHA-256 output is uniform, so its first
// eight bytes are as good as any hash.
func (x *index) home(id *chunk.ID) uint64 {
	return binary.LittleEndian.Uint64(id[:8]) & x.mask
}

// find returns the slot holding id, or -1.
func (x *index) find(id *chunk.ID) int {
	for i := x.home(id); ; i = (i + 1) & x.mask {
		s := x.slots[i]
		if s == 0 {
			return -1
		}
		if x.entry(s-1).id == *id {
			return int(i)
		}
	}
}

func (x *index) get(id chunk.ID) (location, bool) {
	i := x.find(&id)
	if i < 0 {
		return location{}, false
	}
	return x.entry(x.slots[i] - 1).loc, true
}

// set inserts or updates id's location and reports whether id was new.
func (x *index) set(id chunk.ID, loc location) bool {
	if i := x.find(&id); i >= 0 {
		x.entry(x.slots[i] - 1).loc = loc
		return false
	}
	if uint64(x.n+1)*4 > uint64(len(x.slots))*3 {
		x.grow()
	}
	e := x.alloc()
	*x.entry(e) = indexEntry{id: id, loc: loc}
	x.place(e)
	x.n++
	return true
}

func (x *index) alloc() uint32 {
	if k := len(x.free); k > 0 {
		e := x.free[k-1]
		x.free = x.free[:k-1]
		return e
	}
	if int(x.next) == len(x.pages)*indexPageLen {
		x.pages = append(x.pages, make([]indexEntry, indexPageLen))
	}
	x.next++
	return x.next - 1
}

func (x *index) place(e uint32) {
	id := &x.entry(e).id
	i := x.home(id)
	for x.slots[i] != 0 {
		i = (i + 1) & x.mask
	}
	x.slots[i] = e + 1
}

func (x *index) grow() {
	old := x.slots
	x.slots = make([]uint32, 2*len(old))
	x.mask = uint64(len(x.slots) - 1)
	for _, s := range old {
		if s != 0 {
			x.place(s - 1)
		}
	}
}

// remove deletes id, closing the gap by backward shifting so that probe
// chains never need tombstones.
func (x *index) remove(id chunk.ID) (location, bool) {
	i := x.find(&id)
	if i < 0 {
		return location{}, false
	}
	e := x.slots[i] - 1
	loc := x.entry(e).loc
	*x.entry(e) = indexEntry{}
	x.free = append(x.free, e)
	x.n--
	hole := uint64(i)
	for j := (hole + 1) & x.mask; x.slots[j] != 0; j = (j + 1) & x.mask {
		h := x.home(&x.entry(x.slots[j] - 1).id)
		// Move slot j into the hole unless its home lies cyclically in (hole, j].
		if (j-h)&x.mask >= (j-hole)&x.mask {
			x.slots[hole] = x.slots[j]
			hole = j
		}
	}
	x.slots[hole] = 0
	return loc, true
}

// each calls fn for every entry until it returns false.
func (x *index) each(fn func(id chunk.ID, loc location) bool) {
	for _, s := range x.slots {
		if s != 0 {
			e := x.entry(s - 1)
			if !fn(e.id, e.loc) {
				return
			}
		}
	}
}

// memoryBytes is the heap the index holds, from its arrays' capacities.
func (x *index) memoryBytes() int64 {
	const entrySize = 44
	return int64(len(x.pages))*indexPageLen*entrySize + int64(cap(x.slots))*4 + int64(cap(x.free))*4 + int64(cap(x.pages))*24
}
