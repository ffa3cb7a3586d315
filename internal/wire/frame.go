package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/sgrelay/sg/internal/chunk"
)

// Type says what a frame carries.
type Type uint8

// Frame types. Values are part of the wire format: never renumber.
const (
	TypePush    Type = 1
	TypePushAck Type = 2
	TypeHave    Type = 3
	TypeHaveAck Type = 4
	TypeGet     Type = 5
	TypeGetAck  Type = 6
	TypeInfo    Type = 7
	TypeInfoAck Type = 8
	TypeError   Type = 9
)

func (t Type) String() string {
	switch t {
	case TypePush:
		return "push"
	case TypePushAck:
		return "push-ack"
	case TypeHave:
		return "have"
	case TypeHaveAck:
		return "have-ack"
	case TypeGet:
		return "get"
	case TypeGetAck:
		return "get-ack"
	case TypeInfo:
		return "info"
	case TypeInfoAck:
		return "info-ack"
	case TypeError:
		return "error"
	case TypeMigrateOpen:
		return "migrate-open"
	case TypeHolders:
		return "holders"
	case TypePlacements:
		return "placements"
	case TypeSealedPlacements:
		return "sealed-placements"
	case TypeMigrateDone:
		return "migrate-done"
	case TypeAck:
		return "ack"
	case TypeDemand:
		return "demand"
	case TypeDemandAck:
		return "demand-ack"
	case TypeRelease:
		return "release"
	case TypeAbort:
		return "abort"
	case TypePushPlacements:
		return "push-placements"
	case TypePushIDs:
		return "push-ids"
	case TypePushIDsAck:
		return "push-ids-ack"
	case TypeHold:
		return "hold"
	case TypeRenew:
		return "renew"
	case TypeRemove:
		return "remove"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Hard limits. They bound what one frame can cost a receiver.
const (
	// MaxChunkSize is the largest chunk sg sends: disk blocks are 64 KiB by
	// default; 1 MiB leaves room for larger configured blocks.
	MaxChunkSize = 1 << 20
	// MaxBatch is the most chunks or IDs in one frame.
	MaxBatch = 4096
	// MaxFrameSize caps a whole frame: 8 MiB holds a push batch of several
	// max-size chunks while bounding per-stream buffering.
	MaxFrameSize = 8 << 20
	// headerSize is the length prefix plus the type byte.
	headerSize = 5
)

// MaxRequestFrame is the largest frame (type byte and payload) a request
// of type t can be when it is well formed: a server caps its Reader for
// t's protocol at it, so a peer cannot make it buffer more than the
// largest honest request, even by sending the bytes. Pushes carry chunks
// and take the general cap.
func MaxRequestFrame(t Type) int {
	switch t {
	case TypeHave: // n u16, n × id
		return 1 + 2 + MaxBatch*chunk.Size
	case TypeGet: // prio u8, n u16, n × id
		return 1 + 1 + 2 + MaxBatch*chunk.Size
	case TypeInfo: // empty
		return 1
	case TypePushIDs: // digest
		return 1 + chunk.Size
	}
	return MaxFrameSize
}

// Errors a decoder returns. A peer that triggers one has broken the protocol.
var (
	ErrFrameTooLarge = errors.New("frame exceeds size cap")
	ErrMalformed     = errors.New("malformed frame")
	ErrUnexpected    = errors.New("unexpected frame type")
)

// Reader reads frames from a stream into one reused buffer, which grows
// with the bytes received (never beyond the cap).
type Reader struct {
	r   *bufio.Reader
	buf []byte
	max int
}

// NewReader returns a Reader that refuses frames longer than maxFrame bytes
// (at most MaxFrameSize).
func NewReader(r io.Reader, maxFrame int) *Reader {
	if maxFrame <= 0 || maxFrame > MaxFrameSize {
		maxFrame = MaxFrameSize
	}
	return &Reader{r: bufio.NewReaderSize(r, 64<<10), max: maxFrame}
}

// Next reads one frame. The payload is valid until the next call.
// io.EOF means the peer closed cleanly between frames.
func (r *Reader) Next() (Type, []byte, error) {
	var hdr [headerSize]byte
	if _, err := io.ReadFull(r.r, hdr[:4]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, fmt.Errorf("read frame header: %w", err)
		}
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:4]))
	if n < 1 {
		return 0, nil, fmt.Errorf("frame length %d: %w", n, ErrMalformed)
	}
	if n > r.max {
		return 0, nil, fmt.Errorf("frame of %d bytes (cap %d): %w", n, r.max, ErrFrameTooLarge)
	}
	b, err := r.readPayload(n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, fmt.Errorf("read %d-byte frame: %w", n, err)
	}
	return Type(b[0]), b[1:], nil
}

// growStep is the first buffer a frame gets; after it, the buffer at most
// doubles the bytes received. A frame's length header is only a promise,
// so memory follows the bytes that arrive, not the header.
const growStep = 64 << 10

// readPayload reads n bytes into r.buf, growing it (doubling, from
// growStep) only as the bytes arrive: a peer that announces a large frame
// and sends little costs us little.
func (r *Reader) readPayload(n int) ([]byte, error) {
	b := r.buf[:0]
	for len(b) < n {
		if len(b) == cap(b) {
			grown := make([]byte, len(b), min(n, max(growStep, 2*cap(b))))
			copy(grown, b)
			b = grown
			r.buf = b
		}
		k, err := io.ReadFull(r.r, b[len(b):min(n, cap(b))])
		b = b[:len(b)+k]
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Expect reads one frame and fails unless it has type want. An Error frame
// from the peer is returned as a *RemoteError.
func (r *Reader) Expect(want Type) ([]byte, error) {
	t, p, err := r.Next()
	if err != nil {
		return nil, err
	}
	if t == want {
		return p, nil
	}
	if t == TypeError {
		re, err := DecodeError(p)
		if err != nil {
			return nil, err
		}
		return nil, re
	}
	return nil, fmt.Errorf("got %s, want %s: %w", t, want, ErrUnexpected)
}

// Begin starts a frame of type t in dst (whose contents are discarded) and
// returns it; append the payload, then call Finish.
func Begin(dst []byte, t Type) []byte {
	return append(dst[:0], 0, 0, 0, 0, byte(t))
}

// Finish writes the length prefix of a frame started with Begin.
func Finish(frame []byte) []byte {
	binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
	return frame
}
