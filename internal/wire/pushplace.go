package wire

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/sgrelay/sg/internal/chunk"
)

// A PushPlacements frame (on /sg/migrate/2) places the chunks of
// acknowledged pushes by the digest each holder answered its push with
// (PushDigest: SHA-256 of the chunks' IDs in push order), not ID by ID:
// 32 bytes a push instead of 32 a chunk on the source's link. The
// destination asks a holder for the IDs behind a digest with PushIDs (on
// /sg/pushids/1) and checks that they hash to it before it places them.
//
//	PushPlacements n u16, n × (holders u32, digest [32], runs u16,
//	               runs × (region u16, first index u64, count u16))
//	PushIDs        digest [32]
//	PushIDsAck     status u8, [n u16, n × id [32]] if OK
const (
	TypePushPlacements Type = 20
	TypePushIDs        Type = 21
	TypePushIDsAck     Type = 22
)

// MaxPushPlacements bounds the pushes one PushPlacements frame places.
const MaxPushPlacements = 256

// PushPlacement places one push's chunks: the i-th chunk of the push is at
// the i-th position the runs cover, with these holders.
type PushPlacement struct {
	Holders uint32
	Digest  chunk.ID
	Runs    []Run
}

// Run is count consecutive positions of a region from first.
type Run struct {
	Region uint16
	First  uint64
	Count  uint16
}

// Positions is how many positions the runs cover: the push's chunks.
func (pp *PushPlacement) Positions() int {
	n := 0
	for _, r := range pp.Runs {
		n += int(r.Count)
	}
	return n
}

// Placements expands pp with the push's IDs (in push order) into
// placements, appending to dst. It fails unless the IDs hash to the digest
// and are as many as the positions.
func (pp *PushPlacement) Placements(ids []chunk.ID, dst []Placement) ([]Placement, error) {
	if len(ids) != pp.Positions() {
		return dst, fmt.Errorf("push %s: %d IDs for %d positions: %w", pp.Digest.Short(), len(ids), pp.Positions(), ErrMalformed)
	}
	if d := IDsDigest(ids); d != pp.Digest {
		return dst, fmt.Errorf("push %s: the IDs hash to %s: %w", pp.Digest.Short(), d.Short(), ErrMalformed)
	}
	k := 0
	for _, r := range pp.Runs {
		for j := range uint64(r.Count) {
			dst = append(dst, Placement{Region: r.Region, Index: r.First + j, ID: ids[k], Holders: pp.Holders})
			k++
		}
	}
	return dst, nil
}

// IDsDigest is PushDigest of chunks with these IDs.
func IDsDigest(ids []chunk.ID) chunk.ID {
	h := sha256.New()
	for i := range ids {
		h.Write(ids[i][:])
	}
	var d chunk.ID
	h.Sum(d[:0])
	return d
}

// AppendRuns appends position (region, index) to runs, extending the last
// run when it is the next position.
func AppendRuns(runs []Run, region uint16, index uint64) []Run {
	if k := len(runs) - 1; k >= 0 && runs[k].continuedBy(region, index) {
		runs[k].Count++
		return runs
	}
	return append(runs, Run{Region: region, First: index, Count: 1})
}

// continuedBy reports whether r can grow by (region, index), the position
// just after it.
func (r Run) continuedBy(region uint16, index uint64) bool {
	end := r.First + uint64(r.Count)
	return r.Region == region && r.Count < ^uint16(0) && end > r.First && end == index
}

// AppendPushPlacements encodes a PushPlacements frame (at most
// MaxPushPlacements pushes; the caller splits).
func AppendPushPlacements(dst []byte, pps []PushPlacement) []byte {
	b := Begin(dst, TypePushPlacements)
	b = binary.BigEndian.AppendUint16(b, uint16(len(pps)))
	for _, pp := range pps {
		b = binary.BigEndian.AppendUint32(b, pp.Holders)
		b = append(b, pp.Digest[:]...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(pp.Runs)))
		for _, r := range pp.Runs {
			b = binary.BigEndian.AppendUint16(b, r.Region)
			b = binary.BigEndian.AppendUint64(b, r.First)
			b = binary.BigEndian.AppendUint16(b, r.Count)
		}
	}
	return Finish(b)
}

const pushPlacementHeader = 4 + chunk.Size + 2
const runSize = 2 + 8 + 2

// DecodePushPlacements decodes a PushPlacements payload, appending to
// dst[:0]. A push covers 1 to MaxBatch positions; runs that could have been
// one are malformed (AppendRuns merges them), so a payload has one
// encoding.
func DecodePushPlacements(p []byte, dst []PushPlacement) ([]PushPlacement, error) {
	dst = dst[:0]
	if len(p) < 2 {
		return dst, fmt.Errorf("push placements: truncated: %w", ErrMalformed)
	}
	n := int(binary.BigEndian.Uint16(p))
	p = p[2:]
	if n == 0 || n > MaxPushPlacements {
		return dst, fmt.Errorf("push placements: %d pushes (1..%d): %w", n, MaxPushPlacements, ErrMalformed)
	}
	for range n {
		if len(p) < pushPlacementHeader {
			return dst, fmt.Errorf("push placements: truncated header: %w", ErrMalformed)
		}
		pp := PushPlacement{Holders: binary.BigEndian.Uint32(p), Digest: chunk.ID(p[4:])}
		runs := int(binary.BigEndian.Uint16(p[4+chunk.Size:]))
		p = p[pushPlacementHeader:]
		switch {
		case pp.Holders == 0:
			return dst, fmt.Errorf("push placements: push %s has no holder: %w", pp.Digest.Short(), ErrMalformed)
		case pp.Digest.IsZero():
			return dst, fmt.Errorf("push placements: zero digest: %w", ErrMalformed)
		case runs == 0 || runs > MaxBatch || len(p) < runs*runSize:
			return dst, fmt.Errorf("push placements: %d runs with %d bytes left: %w", runs, len(p), ErrMalformed)
		}
		pp.Runs = make([]Run, 0, runs)
		total := 0
		for range runs {
			r := Run{Region: binary.BigEndian.Uint16(p), First: binary.BigEndian.Uint64(p[2:]), Count: binary.BigEndian.Uint16(p[10:])}
			p = p[runSize:]
			total += int(r.Count)
			switch {
			case r.Count == 0 || total > MaxBatch:
				return dst, fmt.Errorf("push placements: run of %d, %d positions in all (cap %d): %w", r.Count, total, MaxBatch, ErrMalformed)
			case r.First+uint64(r.Count-1) < r.First:
				return dst, fmt.Errorf("push placements: run at index %d of %d overflows: %w", r.First, r.Count, ErrMalformed)
			}
			if k := len(pp.Runs) - 1; k >= 0 && pp.Runs[k].continuedBy(r.Region, r.First) {
				return dst, fmt.Errorf("push placements: run at index %d continues the one before: %w", r.First, ErrMalformed)
			}
			pp.Runs = append(pp.Runs, r)
		}
		dst = append(dst, pp)
	}
	if len(p) != 0 {
		return dst, fmt.Errorf("push placements: %d trailing bytes: %w", len(p), ErrMalformed)
	}
	return dst, nil
}

// AppendPushIDs encodes a request for the IDs behind a push digest.
func AppendPushIDs(dst []byte, digest chunk.ID) []byte {
	return Finish(append(Begin(dst, TypePushIDs), digest[:]...))
}

// DecodePushIDs decodes a PushIDs payload.
func DecodePushIDs(p []byte) (chunk.ID, error) {
	if len(p) != chunk.Size {
		return chunk.ID{}, fmt.Errorf("push IDs: %d bytes, want %d: %w", len(p), chunk.Size, ErrMalformed)
	}
	return chunk.ID(p), nil
}

// AppendPushIDsAck encodes the answer: the IDs (status OK), or a status
// alone (StatusMissing: this peer does not know the digest).
func AppendPushIDsAck(dst []byte, st Status, ids []chunk.ID) []byte {
	b := append(Begin(dst, TypePushIDsAck), byte(st))
	if st == StatusOK {
		b = appendIDs(b, ids)
	}
	return Finish(b)
}

// DecodePushIDsAck decodes a PushIDsAck payload, appending the IDs to
// dst[:0].
func DecodePushIDsAck(p []byte, dst []chunk.ID) (Status, []chunk.ID, error) {
	if len(p) < 1 {
		return 0, dst[:0], fmt.Errorf("push IDs ack: empty: %w", ErrMalformed)
	}
	st := Status(p[0])
	if st != StatusOK {
		if len(p) != 1 {
			return 0, dst[:0], fmt.Errorf("push IDs ack: %d trailing bytes: %w", len(p)-1, ErrMalformed)
		}
		return st, dst[:0], nil
	}
	ids, err := DecodeIDs(p[1:], dst)
	return st, ids, err
}
