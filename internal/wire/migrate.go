package wire

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/names"
	"github.com/sgrelay/sg/internal/seal"
)

// Migrate frames travel on /sg/migrate/2. A source opens a control stream
// to the destination with Open, then sends Holders and Placements as chunks
// are acknowledged, and Done with the manifest root; the destination
// answers each frame with an Ack. A destination opens demand streams to
// the source with Demand frames, answered by DemandAck, to read chunks by
// position before (or whether or not) they have been placed.
//
//	Open       id [16], vm (len u8, bytes), n u16, n × region, [secret [32]]
//	           region: name (len u8, bytes), kind u8, size u64, chunkSize u32
//	           secret: present when the migration's chunks are sealed (see
//	           internal/seal); it opens the manifest's key blocks
//	Holders    n u8, n × (index u8, peer (len u8, bytes))
//	Placements n u16, runs of them: (region u16, first index u64, count u16,
//	           holders u32 bitmask, count × id [32]), consecutive positions
//	SealedPlacements  the same, each id followed by the plain ID [32]
//	Done       root [32]
//	Ack        status u8, message (len u16, bytes)
//	Demand     id [16], region u16, index u64
//	DemandAck  status u8, [len u32, data] if OK
//	Release    id [16], n u16, n × id [32]   gather complete: drop these chunks
const (
	TypeMigrateOpen Type = 10
	TypeHolders     Type = 11
	TypePlacements  Type = 12
	TypeMigrateDone Type = 13
	TypeAck         Type = 14
	TypeDemand      Type = 15
	TypeDemandAck   Type = 16
	TypeRelease     Type = 17
	TypeAbort       Type = 18 // the source gives a migration up (reason)

	TypeSealedPlacements Type = 19
)

// Limits of migrate frames.
const (
	MaxRegions    = 256
	MaxHolders    = 32 // fits the u32 holder mask
	MaxPlacements = 4096
	maxNameLen    = 255
	maxPeerLen    = 128
)

// MigrationID names one migration (one VM's eviction).
type MigrationID [16]byte

func (m MigrationID) String() string { return hex.EncodeToString(m[:]) }

// MarshalText writes the ID in hex, as String does (JSON reports).
func (m MigrationID) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// ParseMigrationID parses the hex form.
func ParseMigrationID(s string) (MigrationID, error) {
	var m MigrationID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(m) {
		return m, fmt.Errorf("migration ID %q: want 32 hex digits", s)
	}
	copy(m[:], b)
	return m, nil
}

// RegionInfo describes one region in an Open.
type RegionInfo struct {
	Name      string
	Kind      uint8
	Size      uint64
	ChunkSize uint32
}

// Open starts a migration at the destination.
type Open struct {
	ID      MigrationID
	VM      string
	Regions []RegionInfo
	// Secret is set when the chunks are sealed (encrypted at rest on
	// relays): placements then carry plain IDs, and it opens the
	// manifest's key blocks.
	Secret seal.Secret
	// PullDuringScatter tells the destination that the relays can take
	// all the source sends: it may fetch from them with whatever its
	// downlink has to spare while the scatter still runs, without
	// slowing the source. (Else its bulk prefetch waits for the end of
	// the scatter.)
	PullDuringScatter bool
}

// openFlagPull is PullDuringScatter in the Open frame's optional flags
// byte (after the secret, if any).
const openFlagPull = 1

// Sealed reports whether the migration's chunks are sealed.
func (o Open) Sealed() bool { return !o.Secret.IsZero() }

// CheckNames refuses an Open whose VM or region names break the rules of
// internal/names, or that names a region twice. The destination turns
// them into file and socket names and reports, so they are checked where
// they are decoded, and again wherever an Open is built from elsewhere (a
// manifest).
func (o Open) CheckNames() error {
	if err := names.CheckVM(o.VM); err != nil {
		return fmt.Errorf("open: %w", err)
	}
	rs := make([]string, len(o.Regions))
	for i, r := range o.Regions {
		rs[i] = r.Name
	}
	if err := names.CheckRegions(rs); err != nil {
		return fmt.Errorf("open: VM %s: %w", o.VM, err)
	}
	return nil
}

// AppendOpen encodes an Open frame.
func AppendOpen(dst []byte, o Open) []byte {
	b := Begin(dst, TypeMigrateOpen)
	b = append(b, o.ID[:]...)
	b = appendShort(b, o.VM)
	b = binary.BigEndian.AppendUint16(b, uint16(len(o.Regions)))
	for _, r := range o.Regions {
		b = appendShort(b, r.Name)
		b = append(b, r.Kind)
		b = binary.BigEndian.AppendUint64(b, r.Size)
		b = binary.BigEndian.AppendUint32(b, r.ChunkSize)
	}
	if o.Sealed() {
		b = append(b, o.Secret[:]...)
	}
	if o.PullDuringScatter {
		b = append(b, openFlagPull)
	}
	return Finish(b)
}

// DecodeOpen decodes an Open payload.
func DecodeOpen(p []byte) (Open, error) {
	var o Open
	if len(p) < 16 {
		return o, fmt.Errorf("open: truncated: %w", ErrMalformed)
	}
	copy(o.ID[:], p)
	p = p[16:]
	var err error
	if o.VM, p, err = readShort(p, maxNameLen); err != nil {
		return o, err
	}
	if len(p) < 2 {
		return o, fmt.Errorf("open: truncated: %w", ErrMalformed)
	}
	n := int(binary.BigEndian.Uint16(p))
	p = p[2:]
	if n == 0 || n > MaxRegions {
		return o, fmt.Errorf("open: %d regions: %w", n, ErrMalformed)
	}
	for range n {
		var r RegionInfo
		if r.Name, p, err = readShort(p, maxNameLen); err != nil {
			return o, err
		}
		if len(p) < 13 {
			return o, fmt.Errorf("open: region %q truncated: %w", r.Name, ErrMalformed)
		}
		r.Kind = p[0]
		r.Size = binary.BigEndian.Uint64(p[1:])
		r.ChunkSize = binary.BigEndian.Uint32(p[9:])
		p = p[13:]
		if r.ChunkSize == 0 || r.ChunkSize > MaxChunkSize || r.Size > 1<<50 {
			return o, fmt.Errorf("open: region %q size %d chunk %d: %w", r.Name, r.Size, r.ChunkSize, ErrMalformed)
		}
		o.Regions = append(o.Regions, r)
	}
	if len(p) == seal.SecretSize || len(p) == seal.SecretSize+1 {
		o.Secret, p = seal.Secret(p), p[seal.SecretSize:]
		if !o.Sealed() {
			return o, fmt.Errorf("open: all-zero secret: %w", ErrMalformed)
		}
	}
	if len(p) == 1 {
		if p[0] != openFlagPull {
			return o, fmt.Errorf("open: flags %#x: %w", p[0], ErrMalformed)
		}
		o.PullDuringScatter, p = true, nil
	}
	if len(p) != 0 {
		return o, fmt.Errorf("open: %d trailing bytes: %w", len(p), ErrMalformed)
	}
	if err := o.CheckNames(); err != nil {
		return o, fmt.Errorf("%w: %w", err, ErrMalformed)
	}
	return o, nil
}

// Holder maps an index used in placement masks to a peer.
type Holder struct {
	Index uint8
	Peer  string
}

// AppendHolders encodes a Holders frame.
func AppendHolders(dst []byte, hs []Holder) []byte {
	b := Begin(dst, TypeHolders)
	b = append(b, byte(len(hs)))
	for _, h := range hs {
		b = append(b, h.Index)
		b = appendShort(b, h.Peer)
	}
	return Finish(b)
}

// DecodeHolders decodes a Holders payload.
func DecodeHolders(p []byte) ([]Holder, error) {
	if len(p) < 1 {
		return nil, fmt.Errorf("holders: empty: %w", ErrMalformed)
	}
	n := int(p[0])
	p = p[1:]
	out := make([]Holder, 0, n)
	for range n {
		if len(p) < 1 {
			return nil, fmt.Errorf("holders: truncated: %w", ErrMalformed)
		}
		h := Holder{Index: p[0]}
		var err error
		if h.Peer, p, err = readShort(p[1:], maxPeerLen); err != nil {
			return nil, err
		}
		if h.Index >= MaxHolders || h.Peer == "" {
			return nil, fmt.Errorf("holders: index %d peer %q: %w", h.Index, h.Peer, ErrMalformed)
		}
		out = append(out, h)
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("holders: %d trailing bytes: %w", len(p), ErrMalformed)
	}
	return out, nil
}

// Placement says where the chunk at one position lives.
type Placement struct {
	Region  uint16
	Index   uint64
	ID      chunk.ID
	Holders uint32   // bit i: the holder with index i has it
	Plain   chunk.ID // sealed migrations: the plaintext's ID (its key)
}

// runHeaderSize is a Placements run's header: region u16, first index
// u64, count u16, holders u32.
const runHeaderSize = 2 + 8 + 2 + 4

// AppendPlacements encodes a Placements frame, or with sealed a
// SealedPlacements frame that also carries each plain ID. Placements at
// consecutive positions of one region with the same holders share one run
// header, so sorted placements cost little more than their IDs (37 bytes a
// position for runs of three, against 46 one by one).
func AppendPlacements(dst []byte, ps []Placement, sealed bool) []byte {
	t := TypePlacements
	if sealed {
		t = TypeSealedPlacements
	}
	b := Begin(dst, t)
	b = binary.BigEndian.AppendUint16(b, uint16(len(ps)))
	for i := 0; i < len(ps); {
		n := 1
		for i+n < len(ps) && n < MaxPlacements && continues(ps[i+n-1], ps[i+n]) {
			n++
		}
		p := ps[i]
		b = binary.BigEndian.AppendUint16(b, p.Region)
		b = binary.BigEndian.AppendUint64(b, p.Index)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
		b = binary.BigEndian.AppendUint32(b, p.Holders)
		for _, q := range ps[i : i+n] {
			b = append(b, q.ID[:]...)
			if sealed {
				b = append(b, q.Plain[:]...)
			}
		}
		i += n
	}
	return Finish(b)
}

// continues reports whether q extends p's run: the next position of the
// same region, with the same holders.
func continues(p, q Placement) bool {
	return q.Region == p.Region && q.Holders == p.Holders && p.Index != ^uint64(0) && q.Index == p.Index+1
}

// DecodePlacements decodes a Placements (or, with sealed, a
// SealedPlacements) payload, appending to dst[:0]. Runs that could have
// been one (AppendPlacements always merges them) are malformed, so a
// payload has one encoding.
func DecodePlacements(p []byte, dst []Placement, sealed bool) ([]Placement, error) {
	dst = dst[:0]
	if len(p) < 2 {
		return dst, fmt.Errorf("placements: truncated: %w", ErrMalformed)
	}
	entry := chunk.Size
	if sealed {
		entry += chunk.Size
	}
	n := int(binary.BigEndian.Uint16(p))
	p = p[2:]
	if n > MaxPlacements {
		return dst, fmt.Errorf("placements: %d (cap %d): %w", n, MaxPlacements, ErrMalformed)
	}
	for len(dst) < n {
		if len(p) < runHeaderSize {
			return dst, fmt.Errorf("placements: truncated run header: %w", ErrMalformed)
		}
		region, first := binary.BigEndian.Uint16(p), binary.BigEndian.Uint64(p[2:])
		count, holders := int(binary.BigEndian.Uint16(p[10:])), binary.BigEndian.Uint32(p[12:])
		p = p[runHeaderSize:]
		switch {
		case count == 0 || len(dst)+count > n:
			return dst, fmt.Errorf("placements: run of %d with %d of %d decoded: %w", count, len(dst), n, ErrMalformed)
		case first+uint64(count-1) < first:
			return dst, fmt.Errorf("placements: run at index %d of %d overflows: %w", first, count, ErrMalformed)
		case holders == 0:
			return dst, fmt.Errorf("placements: run at index %d has no holder: %w", first, ErrMalformed)
		case len(p) < count*entry:
			return dst, fmt.Errorf("placements: run of %d truncated: %w", count, ErrMalformed)
		}
		if k := len(dst); k > 0 && continues(dst[k-1], Placement{Region: region, Index: first, Holders: holders}) {
			return dst, fmt.Errorf("placements: run at index %d continues the one before: %w", first, ErrMalformed)
		}
		for j := range count {
			q := p[j*entry:]
			pl := Placement{Region: region, Index: first + uint64(j), ID: chunk.ID(q), Holders: holders}
			if sealed {
				pl.Plain = chunk.ID(q[chunk.Size:])
			}
			if pl.ID.IsZero() || sealed && pl.Plain.IsZero() {
				return dst, fmt.Errorf("placements: index %d has no chunk or no plain ID: %w", pl.Index, ErrMalformed)
			}
			dst = append(dst, pl)
		}
		p = p[count*entry:]
	}
	if len(p) != 0 {
		return dst, fmt.Errorf("placements: %d trailing bytes: %w", len(p), ErrMalformed)
	}
	return dst, nil
}

// AppendDone encodes a Done frame carrying the manifest root. With build,
// the source stored no copy of the manifest at the destination: it is to
// build it from the placements (a flags byte after the root).
func AppendDone(dst []byte, root chunk.ID, build bool) []byte {
	b := append(Begin(dst, TypeMigrateDone), root[:]...)
	if build {
		b = append(b, doneFlagBuild)
	}
	return Finish(b)
}

const doneFlagBuild = 1

// DecodeDone decodes a Done payload.
func DecodeDone(p []byte) (root chunk.ID, build bool, err error) {
	switch {
	case len(p) == chunk.Size:
		return chunk.ID(p), false, nil
	case len(p) == chunk.Size+1 && p[chunk.Size] == doneFlagBuild:
		return chunk.ID(p), true, nil
	}
	return chunk.ID{}, false, fmt.Errorf("done: %d bytes: %w", len(p), ErrMalformed)
}

// AppendAbort encodes an Abort frame: the source gives the migration up
// before handing over a manifest, for reason.
func AppendAbort(dst []byte, reason string) []byte {
	if len(reason) > maxErrorMessage {
		reason = reason[:maxErrorMessage]
	}
	return Finish(append(Begin(dst, TypeAbort), reason...))
}

// DecodeAbort decodes an Abort payload.
func DecodeAbort(p []byte) (string, error) {
	if len(p) > maxErrorMessage {
		return "", fmt.Errorf("abort: %d-byte reason: %w", len(p), ErrMalformed)
	}
	return string(p), nil
}

// AppendAck encodes an Ack frame.
func AppendAck(dst []byte, st Status, msg string) []byte {
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage]
	}
	b := Begin(dst, TypeAck)
	b = append(b, byte(st))
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return Finish(append(b, msg...))
}

// DecodeAck decodes an Ack payload.
func DecodeAck(p []byte) (Status, string, error) {
	re, err := DecodeError(p) // same layout as Error
	if err != nil {
		return 0, "", fmt.Errorf("ack: %w", err)
	}
	if re.Code > maxKnownStatus {
		return 0, "", fmt.Errorf("ack: status %d: %w", re.Code, ErrMalformed)
	}
	return re.Code, re.Message, nil
}

// DemandReq asks the source for the chunk at a position.
type DemandReq struct {
	ID     MigrationID
	Region uint16
	Index  uint64
}

// AppendDemand encodes a Demand frame.
func AppendDemand(dst []byte, d DemandReq) []byte {
	b := Begin(dst, TypeDemand)
	b = append(b, d.ID[:]...)
	b = binary.BigEndian.AppendUint16(b, d.Region)
	return Finish(binary.BigEndian.AppendUint64(b, d.Index))
}

// DecodeDemand decodes a Demand payload.
func DecodeDemand(p []byte) (DemandReq, error) {
	if len(p) != 26 {
		return DemandReq{}, fmt.Errorf("demand: %d bytes: %w", len(p), ErrMalformed)
	}
	var d DemandReq
	copy(d.ID[:], p)
	d.Region = binary.BigEndian.Uint16(p[16:])
	d.Index = binary.BigEndian.Uint64(p[18:])
	return d, nil
}

// AppendDemandAck encodes a DemandAck frame (data only when st is OK).
func AppendDemandAck(dst []byte, st Status, data []byte) []byte {
	b := Begin(dst, TypeDemandAck)
	b = append(b, byte(st))
	if st == StatusOK {
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		b = append(b, data...)
	}
	return Finish(b)
}

// DecodeDemandAck decodes a DemandAck payload; data aliases p.
func DecodeDemandAck(p []byte) (Status, []byte, error) {
	if len(p) < 1 {
		return 0, nil, fmt.Errorf("demand-ack: empty: %w", ErrMalformed)
	}
	st := Status(p[0])
	if st > maxKnownStatus {
		return 0, nil, fmt.Errorf("demand-ack: status %d: %w", st, ErrMalformed)
	}
	if st != StatusOK {
		if len(p) != 1 {
			return 0, nil, fmt.Errorf("demand-ack: trailing bytes: %w", ErrMalformed)
		}
		return st, nil, nil
	}
	if len(p) < 5 {
		return 0, nil, fmt.Errorf("demand-ack: truncated: %w", ErrMalformed)
	}
	n := int(binary.BigEndian.Uint32(p[1:]))
	if n == 0 || n > MaxChunkSize || len(p) != 5+n {
		return 0, nil, fmt.Errorf("demand-ack: length %d: %w", n, ErrMalformed)
	}
	return st, p[5:], nil
}

func appendShort(b []byte, s string) []byte {
	if len(s) > 255 {
		s = s[:255]
	}
	b = append(b, byte(len(s)))
	return append(b, s...)
}

func readShort(p []byte, limit int) (string, []byte, error) {
	if len(p) < 1 || len(p) < 1+int(p[0]) || int(p[0]) > limit {
		return "", p, fmt.Errorf("string: truncated or too long: %w", ErrMalformed)
	}
	return string(p[1 : 1+int(p[0])]), p[1+int(p[0]):], nil
}

// Release tells a holder (or the source) that a migration's gather is
// complete and lists the chunks it held for it.
type Release struct {
	ID     MigrationID
	Chunks []chunk.ID
}

// AppendRelease encodes a Release frame (at most MaxBatch chunks).
func AppendRelease(dst []byte, r Release) []byte {
	b := Begin(dst, TypeRelease)
	b = append(b, r.ID[:]...)
	return Finish(appendIDs(b, r.Chunks))
}

// DecodeRelease decodes a Release payload.
func DecodeRelease(p []byte) (Release, error) {
	var r Release
	if len(p) < 16 {
		return r, fmt.Errorf("release: truncated: %w", ErrMalformed)
	}
	copy(r.ID[:], p)
	ids, err := DecodeIDs(p[16:], nil)
	if err != nil {
		return r, fmt.Errorf("release: %w", err)
	}
	r.Chunks = ids
	return r, nil
}
