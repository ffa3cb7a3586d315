// Package manifest encodes the content-addressed description of a snapshot
// (a file, or a VM's regions) as a tree of chunks:
//
//	root ──► region "mem"  (size, chunk size, block IDs) ──► block: chunk IDs 0..16383
//	     │                                                 └► block: chunk IDs 16384..
//	     └─► region "disk0" …
//
// The root and every block are themselves chunks, stored and replicated
// like data, so a manifest is fetched by its root ID from any holder and
// verified piece by piece. A zero chunk is listed as chunk.Zero.
//
// A sealed manifest (an eviction encrypted at rest, see internal/seal)
// lists the sealed chunks' IDs in its blocks as usual, and beside each
// region's blocks the same number of key blocks: the plain IDs, from which
// the chunk keys derive, sealed with the eviction's secret. The root itself
// is not sealed (magic SGM2 instead of SGM1).
//
// An erasure-coded manifest (evict --redundancy k+m) also lists its
// stripes in stripe blocks named at the end of the root: each stripe is
// up to k distinct chunks and m parity chunks (Reed-Solomon over the
// chunks padded to the stripe's shard size), so that any m of its shards
// may be lost.
//
// Size: 32 bytes per chunk in blocks (64 when sealed), i.e. 0.8% of a VM of 4 KiB pages and
// 0.05% with 64 KiB disk blocks, plus 32 bytes per block in the root.
package manifest

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/names"
	"github.com/sgrelay/sg/internal/seal"
)

// BlockLen is the most chunk IDs in one block: 512 KiB, under the 1 MiB
// chunk cap, and few enough blocks that a 64 GiB VM's root stays ~32 KiB.
const BlockLen = 16384

// Limits a decoder enforces.
const (
	MaxRegions    = 256
	MaxNameLen    = 255
	MaxChunkSize  = 1 << 20
	maxRootBlocks = 1 << 20
)

var (
	rootMagic       = [4]byte{'S', 'G', 'M', '1'}
	sealedRootMagic = [4]byte{'S', 'G', 'M', '2'}
	blockMagic      = [4]byte{'S', 'G', 'B', '1'}
	stripesTag      = [4]byte{'S', 'G', 'S', '1'} // root trailer: stripe block IDs
	stripeMagic     = [4]byte{'S', 'G', 'P', '1'}
)

// ErrMalformed is returned for bytes that are not a valid manifest node.
var ErrMalformed = errors.New("malformed manifest")

// ErrWrongSecret is returned for a key block that the given secret does
// not open.
var ErrWrongSecret = errors.New("sealed manifest: wrong or missing secret")

// Kind says what a region holds.
type Kind uint8

// Region kinds.
const (
	KindFile   Kind = 0 // a plain file (sgctl put)
	KindMemory Kind = 1 // guest memory
	KindDisk   Kind = 2 // a disk image
	KindState  Kind = 3 // device state blob
)

func (k Kind) String() string {
	switch k {
	case KindFile:
		return "file"
	case KindMemory:
		return "memory"
	case KindDisk:
		return "disk"
	case KindState:
		return "state"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Region is one linear piece of a snapshot.
type Region struct {
	Name      string
	Kind      Kind
	Size      int64
	ChunkSize int
	Blocks    []chunk.ID // IDs of the block chunks, in order
	KeyBlocks []chunk.ID // sealed manifests: IDs of the sealed key blocks, one per block
}

// Chunks is how many chunks the region is cut into.
func (r Region) Chunks() int64 {
	if r.ChunkSize <= 0 {
		return 0
	}
	return (r.Size + int64(r.ChunkSize) - 1) / int64(r.ChunkSize)
}

// BlocksNeeded is how many blocks list the region's chunks.
func (r Region) BlocksNeeded() int {
	return int((r.Chunks() + BlockLen - 1) / BlockLen)
}

// Manifest is the root of a snapshot's tree.
type Manifest struct {
	Name    string // what was captured: a VM or file name
	Sealed  bool   // chunks are sealed; every region has key blocks
	Regions []Region
	// StripeBlocks are the IDs of the stripe blocks (erasure-coded
	// manifests only).
	StripeBlocks []chunk.ID
}

// CheckNames refuses a manifest whose name is not a valid VM name or whose
// region names break the region grammar or repeat (internal/names). A
// gather turns them into file names and views, so it checks them before
// anything is created; Decode does not, because a file's manifest (sgctl
// put) carries the file's own name.
func (m *Manifest) CheckNames() error {
	if err := names.CheckVM(m.Name); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	rs := make([]string, len(m.Regions))
	for i, r := range m.Regions {
		rs[i] = r.Name
	}
	if err := names.CheckRegions(rs); err != nil {
		return fmt.Errorf("manifest of %s: %w", m.Name, err)
	}
	return nil
}

// Encode returns the root chunk's bytes.
func (m *Manifest) Encode() []byte {
	magic := rootMagic
	if m.Sealed {
		magic = sealedRootMagic
	}
	b := append([]byte{}, magic[:]...)
	b = appendName(b, m.Name)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Regions)))
	for _, r := range m.Regions {
		b = appendName(b, r.Name)
		b = append(b, byte(r.Kind))
		b = binary.BigEndian.AppendUint64(b, uint64(r.Size))
		b = binary.BigEndian.AppendUint32(b, uint32(r.ChunkSize))
		b = binary.BigEndian.AppendUint32(b, uint32(len(r.Blocks)))
		for _, id := range r.Blocks {
			b = append(b, id[:]...)
		}
		if m.Sealed {
			for _, id := range r.KeyBlocks {
				b = append(b, id[:]...)
			}
		}
	}
	if len(m.StripeBlocks) > 0 {
		b = append(b, stripesTag[:]...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(m.StripeBlocks)))
		for _, id := range m.StripeBlocks {
			b = append(b, id[:]...)
		}
	}
	return b
}

func appendName(b []byte, s string) []byte {
	if len(s) > MaxNameLen {
		s = s[:MaxNameLen]
	}
	b = append(b, byte(len(s)))
	return append(b, s...)
}

// Decode parses a root chunk and checks that its regions are consistent.
func Decode(p []byte) (*Manifest, error) {
	var m Manifest
	switch {
	case len(p) >= 4 && [4]byte(p[:4]) == rootMagic:
	case len(p) >= 4 && [4]byte(p[:4]) == sealedRootMagic:
		m.Sealed = true
	default:
		return nil, fmt.Errorf("root: bad magic: %w", ErrMalformed)
	}
	p = p[4:]
	var err error
	if m.Name, p, err = readName(p); err != nil {
		return nil, err
	}
	if len(p) < 2 {
		return nil, fmt.Errorf("root: truncated: %w", ErrMalformed)
	}
	n := int(binary.BigEndian.Uint16(p))
	p = p[2:]
	if n > MaxRegions {
		return nil, fmt.Errorf("root: %d regions: %w", n, ErrMalformed)
	}
	for range n {
		var r Region
		if r.Name, p, err = readName(p); err != nil {
			return nil, err
		}
		if len(p) < 17 {
			return nil, fmt.Errorf("region %q: truncated: %w", r.Name, ErrMalformed)
		}
		r.Kind = Kind(p[0])
		size := binary.BigEndian.Uint64(p[1:])
		r.ChunkSize = int(binary.BigEndian.Uint32(p[9:]))
		nb := int(binary.BigEndian.Uint32(p[13:]))
		p = p[17:]
		if size > 1<<62 || r.ChunkSize <= 0 || r.ChunkSize > MaxChunkSize || nb > maxRootBlocks {
			return nil, fmt.Errorf("region %q: size %d, chunk size %d, %d blocks: %w", r.Name, size, r.ChunkSize, nb, ErrMalformed)
		}
		r.Size = int64(size)
		if nb != r.BlocksNeeded() || len(p) < nb*chunk.Size {
			return nil, fmt.Errorf("region %q: %d blocks for %d chunks: %w", r.Name, nb, r.Chunks(), ErrMalformed)
		}
		r.Blocks, p = readIDs(p, nb)
		if m.Sealed {
			if len(p) < nb*chunk.Size {
				return nil, fmt.Errorf("region %q: key blocks truncated: %w", r.Name, ErrMalformed)
			}
			r.KeyBlocks, p = readIDs(p, nb)
		}
		m.Regions = append(m.Regions, r)
	}
	if len(p) >= 8 && [4]byte(p[:4]) == stripesTag {
		n := int(binary.BigEndian.Uint32(p[4:]))
		p = p[8:]
		if n == 0 || n > maxRootBlocks || len(p) != n*chunk.Size {
			return nil, fmt.Errorf("root: %d stripe blocks in %d bytes: %w", n, len(p), ErrMalformed)
		}
		m.StripeBlocks, p = readIDs(p, n)
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("root: %d trailing bytes: %w", len(p), ErrMalformed)
	}
	return &m, nil
}

func readIDs(p []byte, n int) ([]chunk.ID, []byte) {
	ids := make([]chunk.ID, n)
	for i := range ids {
		ids[i] = chunk.ID(p[i*chunk.Size:])
	}
	return ids, p[n*chunk.Size:]
}

func readName(p []byte) (string, []byte, error) {
	if len(p) < 1 || len(p) < 1+int(p[0]) {
		return "", p, fmt.Errorf("name: truncated: %w", ErrMalformed)
	}
	return string(p[1 : 1+int(p[0])]), p[1+int(p[0]):], nil
}

// EncodeBlock returns a block chunk listing ids (at most BlockLen).
func EncodeBlock(ids []chunk.ID) []byte {
	b := make([]byte, 0, 8+len(ids)*chunk.Size)
	b = append(b, blockMagic[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ids)))
	for _, id := range ids {
		b = append(b, id[:]...)
	}
	return b
}

// DecodeBlock parses a block chunk, appending its IDs to dst.
func DecodeBlock(p []byte, dst []chunk.ID) ([]chunk.ID, error) {
	if len(p) < 8 || [4]byte(p[:4]) != blockMagic {
		return dst, fmt.Errorf("block: bad magic: %w", ErrMalformed)
	}
	n := int(binary.BigEndian.Uint32(p[4:]))
	p = p[8:]
	if n == 0 || n > BlockLen || len(p) != n*chunk.Size {
		return dst, fmt.Errorf("block: %d ids in %d bytes: %w", n, len(p), ErrMalformed)
	}
	for i := range n {
		dst = append(dst, chunk.ID(p[i*chunk.Size:]))
	}
	return dst, nil
}

// Node is one manifest chunk to store: a block or the root.
type Node struct {
	ID   chunk.ID
	Data []byte
}

// Build cuts a region's chunk IDs (zero chunks as chunk.Zero) into blocks,
// sets r.Blocks, and returns the block chunks.
func Build(r *Region, ids []chunk.ID) ([]Node, error) {
	if int64(len(ids)) != r.Chunks() {
		return nil, fmt.Errorf("region %q: %d chunk IDs for %d chunks", r.Name, len(ids), r.Chunks())
	}
	var nodes []Node
	r.Blocks = r.Blocks[:0]
	for i := 0; i < len(ids); i += BlockLen {
		b := EncodeBlock(ids[i:min(len(ids), i+BlockLen)])
		id := chunk.Sum(b)
		nodes = append(nodes, Node{ID: id, Data: b})
		r.Blocks = append(r.Blocks, id)
	}
	return nodes, nil
}

// BuildSealed is Build for a sealed region (number ri of its manifest):
// ids are the sealed chunks' IDs, plains the plain IDs at the same
// positions (chunk.Zero for zero chunks). It also sets r.KeyBlocks and
// returns the key blocks, sealed with s, after the blocks.
func BuildSealed(r *Region, ri int, ids, plains []chunk.ID, s seal.Secret) ([]Node, error) {
	nodes, err := Build(r, ids)
	if err != nil {
		return nil, err
	}
	if len(plains) != len(ids) {
		return nil, fmt.Errorf("region %q: %d plain IDs for %d chunks", r.Name, len(plains), len(ids))
	}
	r.KeyBlocks = r.KeyBlocks[:0]
	for i := 0; i < len(plains); i += BlockLen {
		b := EncodeBlock(plains[i:min(len(plains), i+BlockLen)])
		seal.Block(b, b, s, ri, i/BlockLen)
		id := chunk.Sum(b)
		nodes = append(nodes, Node{ID: id, Data: b})
		r.KeyBlocks = append(r.KeyBlocks, id)
	}
	return nodes, nil
}

// OpenKeyBlock opens key block n of region ri (its bytes, verified against
// its ID by the caller) with s and appends its plain IDs to dst. data is
// not modified.
func OpenKeyBlock(data []byte, s seal.Secret, ri, n int, dst []chunk.ID) ([]chunk.ID, error) {
	if s.IsZero() {
		return dst, ErrWrongSecret
	}
	p := make([]byte, len(data))
	seal.Block(p, data, s, ri, n)
	if len(p) < 4 || [4]byte(p[:4]) != blockMagic {
		return dst, ErrWrongSecret
	}
	return DecodeBlock(p, dst)
}

// Stripe is one erasure-coded group of chunks: any len(Parity) of its
// shards (data and parity) may be lost. Data chunks shorter than Size are
// padded with zeros for the code.
type Stripe struct {
	Size   int
	Data   []chunk.ID
	Parity []chunk.ID
}

// Limits of a stripe (reedsolomon's, and the holder mask's).
const (
	MaxStripeData   = 32
	MaxStripeParity = 8
)

// maxStripeBlock keeps a stripe block under the 1 MiB chunk cap.
const maxStripeBlock = MaxChunkSize - 64

// BuildStripes encodes stripes into stripe blocks and returns them; their
// IDs go in Manifest.StripeBlocks.
func BuildStripes(stripes []Stripe) []Node {
	var nodes []Node
	var b []byte
	n := 0
	flush := func() {
		if n == 0 {
			return
		}
		binary.BigEndian.PutUint32(b[4:], uint32(n))
		nodes = append(nodes, Node{ID: chunk.Sum(b), Data: b})
		b, n = nil, 0
	}
	for _, s := range stripes {
		size := 4 + 2 + (len(s.Data)+len(s.Parity))*chunk.Size
		if n > 0 && len(b)+size > maxStripeBlock {
			flush()
		}
		if n == 0 {
			b = append(append(b, stripeMagic[:]...), 0, 0, 0, 0)
		}
		b = binary.BigEndian.AppendUint32(b, uint32(s.Size))
		b = append(b, byte(len(s.Data)), byte(len(s.Parity)))
		for _, id := range s.Data {
			b = append(b, id[:]...)
		}
		for _, id := range s.Parity {
			b = append(b, id[:]...)
		}
		n++
	}
	flush()
	return nodes
}

// DecodeStripeBlock parses a stripe block, appending its stripes to dst.
func DecodeStripeBlock(p []byte, dst []Stripe) ([]Stripe, error) {
	if len(p) < 8 || [4]byte(p[:4]) != stripeMagic {
		return dst, fmt.Errorf("stripe block: bad magic: %w", ErrMalformed)
	}
	n := int(binary.BigEndian.Uint32(p[4:]))
	p = p[8:]
	if n == 0 || n > maxStripeBlock/6 {
		return dst, fmt.Errorf("stripe block: %d stripes: %w", n, ErrMalformed)
	}
	for range n {
		if len(p) < 6 {
			return dst, fmt.Errorf("stripe block: truncated: %w", ErrMalformed)
		}
		s := Stripe{Size: int(binary.BigEndian.Uint32(p))}
		k, m := int(p[4]), int(p[5])
		p = p[6:]
		if s.Size <= 0 || s.Size > MaxChunkSize || k < 2 || k > MaxStripeData || m < 1 || m > MaxStripeParity || len(p) < (k+m)*chunk.Size {
			return dst, fmt.Errorf("stripe block: stripe of %d+%d shards of %d bytes: %w", k, m, s.Size, ErrMalformed)
		}
		s.Data, p = readIDs(p, k)
		s.Parity, p = readIDs(p, m)
		for _, id := range append(s.Data[:k:k], s.Parity...) {
			if id.IsZero() {
				return dst, fmt.Errorf("stripe block: zero chunk in a stripe: %w", ErrMalformed)
			}
		}
		dst = append(dst, s)
	}
	if len(p) != 0 {
		return dst, fmt.Errorf("stripe block: %d trailing bytes: %w", len(p), ErrMalformed)
	}
	return dst, nil
}

// BuildTree builds a whole unsealed, unstriped manifest from each region's
// chunk IDs (zero chunks as chunk.Zero): the root's ID and every node, the
// root last. The source builds it from what it read, and a destination
// from the placements it was sent; the same IDs give the same root.
func BuildTree(name string, regions []Region, ids [][]chunk.ID) (chunk.ID, []Node, error) {
	if len(ids) != len(regions) {
		return chunk.ID{}, nil, fmt.Errorf("%d regions, chunk IDs for %d", len(regions), len(ids))
	}
	m := Manifest{Name: name}
	var nodes []Node
	for i, r := range regions {
		ns, err := Build(&r, ids[i])
		if err != nil {
			return chunk.ID{}, nil, err
		}
		nodes = append(nodes, ns...)
		m.Regions = append(m.Regions, r)
	}
	data := m.Encode()
	root := chunk.Sum(data)
	return root, append(nodes, Node{ID: root, Data: data}), nil
}
