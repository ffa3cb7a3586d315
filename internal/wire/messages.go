package wire

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/sgrelay/sg/internal/chunk"
)

// Chunk is one chunk in a Push or GetAck. Data aliases the frame buffer.
type Chunk struct {
	ID   chunk.ID
	Data []byte
}

// Status is the outcome for one chunk in a PushAck or GetAck.
type Status uint8

// Statuses. Values are part of the wire format.
const (
	StatusOK       Status = 0 // stored (push) or here it is (get)
	StatusBadHash  Status = 1 // bytes did not match the ID: nothing stored
	StatusFull     Status = 2 // no room left within the receiver's budgets
	StatusMissing  Status = 3 // not held (get)
	StatusFailed   Status = 4 // the receiver failed to store or read it
	StatusRefused  Status = 5 // the receiver will not take it (quota, policy)
	StatusZero     Status = 6 // demand: the chunk at that position is all zeros (no data follows)
	maxKnownStatus        = StatusZero
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusBadHash:
		return "bad-hash"
	case StatusFull:
		return "full"
	case StatusMissing:
		return "missing"
	case StatusFailed:
		return "failed"
	case StatusRefused:
		return "refused"
	case StatusZero:
		return "zero"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Priority orders Get requests. Demand requests travel on their own stream,
// and the receiver serves them before any prefetch.
type Priority uint8

// Priorities.
const (
	Prefetch Priority = 0
	Demand   Priority = 1
)

// AppendPush encodes a Push frame into dst. The chunks' IDs do not travel:
// the receiver computes each from its bytes (it would hash them to verify
// a sent ID anyway), and its PushAck carries a digest of what it computed,
// which the sender checks against PushDigest of its own IDs. That saves
// 32 bytes a chunk, 0.8% of a 4 KiB page, on the link evictions are
// limited by.
func AppendPush(dst []byte, chunks []Chunk) []byte {
	b := Begin(dst, TypePush)
	b = binary.BigEndian.AppendUint16(b, uint16(len(chunks)))
	for i := range chunks {
		b = binary.BigEndian.AppendUint32(b, uint32(len(chunks[i].Data)))
		b = append(b, chunks[i].Data...)
	}
	return Finish(b)
}

// DecodePush decodes a Push payload, appending to dst[:0]. The data slices
// alias p; the IDs are left zero (the caller computes them). It checks
// structure and caps only.
func DecodePush(p []byte, dst []Chunk) ([]Chunk, error) {
	n, p, err := count(p)
	if err != nil {
		return dst[:0], err
	}
	dst = dst[:0]
	for range n {
		if len(p) < 4 {
			return dst, fmt.Errorf("push: truncated chunk header: %w", ErrMalformed)
		}
		l := int(binary.BigEndian.Uint32(p))
		p = p[4:]
		if l == 0 || l > MaxChunkSize || l > len(p) {
			return dst, fmt.Errorf("push: chunk length %d: %w", l, ErrMalformed)
		}
		dst = append(dst, Chunk{Data: p[:l:l]})
		p = p[l:]
	}
	if len(p) != 0 {
		return dst, fmt.Errorf("push: %d trailing bytes: %w", len(p), ErrMalformed)
	}
	return dst, nil
}

// PushDigest is what a PushAck says of the chunks it answers: the SHA-256
// of their IDs, in order. A receiver computes it from the IDs it derived
// from the bytes; a sender, from the IDs it meant. They differ only if
// the bytes stored are not the bytes sent.
func PushDigest(chunks []Chunk) chunk.ID {
	h := sha256.New()
	for i := range chunks {
		h.Write(chunks[i].ID[:])
	}
	var d chunk.ID
	h.Sum(d[:0])
	return d
}

// AppendPushAck encodes a PushAck frame into dst.
func AppendPushAck(dst []byte, st []Status, digest chunk.ID) []byte {
	b := Begin(dst, TypePushAck)
	b = binary.BigEndian.AppendUint16(b, uint16(len(st)))
	for _, s := range st {
		b = append(b, byte(s))
	}
	b = append(b, digest[:]...)
	return Finish(b)
}

// DecodePushAck decodes a PushAck payload, appending the statuses to dst[:0].
func DecodePushAck(p []byte, dst []Status) ([]Status, chunk.ID, error) {
	var digest chunk.ID
	n, p, err := count(p)
	if err != nil {
		return dst[:0], digest, err
	}
	if len(p) != n+chunk.Size {
		return dst[:0], digest, fmt.Errorf("push-ack: %d bytes for %d statuses and a digest: %w", len(p), n, ErrMalformed)
	}
	dst = dst[:0]
	for _, s := range p[:n] {
		if Status(s) > maxKnownStatus {
			return dst, digest, fmt.Errorf("push-ack: unknown status %d: %w", s, ErrMalformed)
		}
		dst = append(dst, Status(s))
	}
	copy(digest[:], p[n:])
	return dst, digest, nil
}

// AppendHave encodes a Have frame into dst.
func AppendHave(dst []byte, ids []chunk.ID) []byte {
	b := Begin(dst, TypeHave)
	return Finish(appendIDs(b, ids))
}

// DecodeIDs decodes the ID list of a Have payload (or of a Get payload after
// its priority byte), appending to dst[:0].
func DecodeIDs(p []byte, dst []chunk.ID) ([]chunk.ID, error) {
	n, p, err := count(p)
	if err != nil {
		return dst[:0], err
	}
	if len(p) != n*chunk.Size {
		return dst[:0], fmt.Errorf("id list: %d ids in %d bytes: %w", n, len(p), ErrMalformed)
	}
	dst = dst[:0]
	for i := range n {
		dst = append(dst, chunk.ID(p[i*chunk.Size:(i+1)*chunk.Size]))
	}
	return dst, nil
}

// AppendHaveAck encodes a HaveAck frame: bit i of the bitmap is held[i].
func AppendHaveAck(dst []byte, held []bool) []byte {
	b := Begin(dst, TypeHaveAck)
	b = binary.BigEndian.AppendUint16(b, uint16(len(held)))
	var cur byte
	for i, h := range held {
		if h {
			cur |= 1 << (i % 8)
		}
		if i%8 == 7 {
			b = append(b, cur)
			cur = 0
		}
	}
	if len(held)%8 != 0 {
		b = append(b, cur)
	}
	return Finish(b)
}

// DecodeHaveAck decodes a HaveAck payload, appending to dst[:0].
func DecodeHaveAck(p []byte, dst []bool) ([]bool, error) {
	n, p, err := count(p)
	if err != nil {
		return dst[:0], err
	}
	if len(p) != (n+7)/8 {
		return dst[:0], fmt.Errorf("have-ack: %d bits in %d bytes: %w", n, len(p), ErrMalformed)
	}
	dst = dst[:0]
	for i := range n {
		dst = append(dst, p[i/8]&(1<<(i%8)) != 0)
	}
	return dst, nil
}

// AppendGet encodes a Get frame into dst.
func AppendGet(dst []byte, prio Priority, ids []chunk.ID) []byte {
	b := Begin(dst, TypeGet)
	b = append(b, byte(prio))
	return Finish(appendIDs(b, ids))
}

// DecodeGet decodes a Get payload.
func DecodeGet(p []byte, dst []chunk.ID) (Priority, []chunk.ID, error) {
	if len(p) < 1 {
		return 0, dst[:0], fmt.Errorf("get: empty: %w", ErrMalformed)
	}
	prio := Priority(p[0])
	if prio > Demand {
		return 0, dst[:0], fmt.Errorf("get: priority %d: %w", prio, ErrMalformed)
	}
	ids, err := DecodeIDs(p[1:], dst)
	return prio, ids, err
}

// GetResult is one entry of a GetAck. Data aliases the frame buffer.
type GetResult struct {
	Status Status
	Data   []byte
}

// AppendGetAck encodes a GetAck frame into dst.
func AppendGetAck(dst []byte, res []GetResult) []byte {
	b := Begin(dst, TypeGetAck)
	b = binary.BigEndian.AppendUint16(b, uint16(len(res)))
	for _, r := range res {
		b = append(b, byte(r.Status))
		if r.Status == StatusOK {
			b = binary.BigEndian.AppendUint32(b, uint32(len(r.Data)))
			b = append(b, r.Data...)
		}
	}
	return Finish(b)
}

// DecodeGetAck decodes a GetAck payload, appending to dst[:0].
func DecodeGetAck(p []byte, dst []GetResult) ([]GetResult, error) {
	n, p, err := count(p)
	if err != nil {
		return dst[:0], err
	}
	dst = dst[:0]
	for range n {
		if len(p) < 1 {
			return dst, fmt.Errorf("get-ack: truncated: %w", ErrMalformed)
		}
		r := GetResult{Status: Status(p[0])}
		p = p[1:]
		if r.Status > maxKnownStatus {
			return dst, fmt.Errorf("get-ack: unknown status %d: %w", r.Status, ErrMalformed)
		}
		if r.Status == StatusOK {
			if len(p) < 4 {
				return dst, fmt.Errorf("get-ack: truncated length: %w", ErrMalformed)
			}
			l := int(binary.BigEndian.Uint32(p))
			p = p[4:]
			if l == 0 || l > MaxChunkSize || l > len(p) {
				return dst, fmt.Errorf("get-ack: chunk length %d: %w", l, ErrMalformed)
			}
			r.Data = p[:l:l]
			p = p[l:]
		}
		dst = append(dst, r)
	}
	if len(p) != 0 {
		return dst, fmt.Errorf("get-ack: %d trailing bytes: %w", len(p), ErrMalformed)
	}
	return dst, nil
}

// Info is a node's answer to an Info request.
type Info struct {
	MemFree  uint64 // bytes the memory tier can still take
	DiskFree uint64 // bytes the disk tier can still take
	Load     uint32 // requests being served right now
	Zone     string // operator-chosen failure/locality zone, may be empty
	// Downlink is the bytes/s this node can take in (its link, or its
	// ingest cap if lower); 0: not said.
	Downlink uint64
	// Chunks is how many chunks its store holds, if ChunksKnown: a store
	// that holds none need not be asked which it holds.
	Chunks      uint64
	ChunksKnown bool
}

// infoTrailer is the InfoAck's optional trailer: the downlink and the
// chunk count plus one (0: not said), eight bytes each.
const infoTrailer = 16

// MaxZoneLen caps a zone label.
const MaxZoneLen = 64

// AppendInfoAck encodes an InfoAck frame into dst. A zone longer than
// MaxZoneLen is cut.
func AppendInfoAck(dst []byte, in Info) []byte {
	b := Begin(dst, TypeInfoAck)
	b = binary.BigEndian.AppendUint64(b, in.MemFree)
	b = binary.BigEndian.AppendUint64(b, in.DiskFree)
	b = binary.BigEndian.AppendUint32(b, in.Load)
	z := in.Zone
	if len(z) > MaxZoneLen {
		z = z[:MaxZoneLen]
	}
	b = append(b, byte(len(z)))
	b = append(b, z...)
	if in.Downlink > 0 || in.ChunksKnown {
		b = binary.BigEndian.AppendUint64(b, in.Downlink)
		var chunks uint64
		if in.ChunksKnown {
			chunks = min(in.Chunks, 1<<62) + 1
		}
		b = binary.BigEndian.AppendUint64(b, chunks)
	}
	return Finish(b)
}

// DecodeInfoAck decodes an InfoAck payload.
func DecodeInfoAck(p []byte) (Info, error) {
	if len(p) < 21 {
		return Info{}, fmt.Errorf("info-ack: %d bytes: %w", len(p), ErrMalformed)
	}
	in := Info{
		MemFree:  binary.BigEndian.Uint64(p),
		DiskFree: binary.BigEndian.Uint64(p[8:]),
		Load:     binary.BigEndian.Uint32(p[16:]),
	}
	zl := int(p[20])
	if zl > MaxZoneLen || (len(p) != 21+zl && len(p) != 21+zl+infoTrailer) {
		return Info{}, fmt.Errorf("info-ack: zone length %d: %w", zl, ErrMalformed)
	}
	in.Zone = string(p[21 : 21+zl])
	if t := p[21+zl:]; len(t) == infoTrailer {
		in.Downlink = binary.BigEndian.Uint64(t)
		chunks := binary.BigEndian.Uint64(t[8:])
		if in.Downlink == 0 && chunks == 0 || chunks > 1<<62+1 {
			return Info{}, fmt.Errorf("info-ack: trailer says nothing: %w", ErrMalformed)
		}
		if chunks > 0 {
			in.Chunks, in.ChunksKnown = chunks-1, true
		}
	}
	return in, nil
}

// AppendInfo encodes an (empty) Info request frame.
func AppendInfo(dst []byte) []byte { return Finish(Begin(dst, TypeInfo)) }

// RemoteError is an Error frame sent by a peer that refused a request.
type RemoteError struct {
	Code    Status
	Message string
}

func (e *RemoteError) Error() string { return fmt.Sprintf("peer refused (%s): %s", e.Code, e.Message) }

// maxErrorMessage caps the text of an Error frame.
const maxErrorMessage = 1024

// AppendError encodes an Error frame into dst.
func AppendError(dst []byte, code Status, msg string) []byte {
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage]
	}
	b := Begin(dst, TypeError)
	b = append(b, byte(code))
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return Finish(append(b, msg...))
}

// DecodeError decodes an Error payload.
func DecodeError(p []byte) (*RemoteError, error) {
	if len(p) < 3 {
		return nil, fmt.Errorf("error frame: %d bytes: %w", len(p), ErrMalformed)
	}
	l := int(binary.BigEndian.Uint16(p[1:]))
	if l > maxErrorMessage || len(p) != 3+l {
		return nil, fmt.Errorf("error frame: message length %d: %w", l, ErrMalformed)
	}
	return &RemoteError{Code: Status(p[0]), Message: string(p[3:])}, nil
}

func appendIDs(b []byte, ids []chunk.ID) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(ids)))
	for i := range ids {
		b = append(b, ids[i][:]...)
	}
	return b
}

// count reads a batch count and checks it against MaxBatch.
func count(p []byte) (int, []byte, error) {
	if len(p) < 2 {
		return 0, p, fmt.Errorf("missing count: %w", ErrMalformed)
	}
	n := int(binary.BigEndian.Uint16(p))
	if n > MaxBatch {
		return 0, p, fmt.Errorf("batch of %d (cap %d): %w", n, MaxBatch, ErrMalformed)
	}
	return n, p[2:], nil
}
