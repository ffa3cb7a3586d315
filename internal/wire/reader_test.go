package wire

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"

	"github.com/sgrelay/sg/internal/chunk"
)

// A frame header is a promise: a peer that announces a frame at the cap
// and sends 1 KiB makes the Reader hold about what arrived, not the cap.
func TestReaderGrowsWithBytesNotHeader(t *testing.T) {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], MaxFrameSize)
	stream := io.MultiReader(bytes.NewReader(hdr[:]), bytes.NewReader(make([]byte, 1<<10)),
		iotest.ErrReader(errors.New("peer went quiet")))
	r := NewReader(stream, MaxFrameSize)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := r.Next()
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("a truncated frame was decoded")
	}
	if cap(r.buf) > growStep {
		t.Fatalf("after 1 KiB of a frame announced at %d bytes the buffer holds %d bytes (want <= %d)", MaxFrameSize, cap(r.buf), growStep)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("reading 1 KiB of a promised %d-byte frame allocated %d bytes", MaxFrameSize, got)
	}
}

// A large frame that arrives in small pieces is read whole and intact,
// and the buffer ends no larger than the frame.
func TestReaderLargeFrameInPieces(t *testing.T) {
	payload := make([]byte, 3<<20+17)
	rand.Read(payload)
	frame := Finish(append(Begin(nil, TypeAbort), payload...))
	frame = append(frame, Finish(append(Begin(nil, TypeAbort), 'x'))...)
	r := NewReader(iotest.HalfReader(bytes.NewReader(frame)), MaxFrameSize)
	typ, p, err := r.Next()
	if err != nil || typ != TypeAbort || !bytes.Equal(p, payload) {
		t.Fatalf("large frame: type %s, %d bytes, err %v; want abort with %d bytes", typ, len(p), err, len(payload))
	}
	if cap(r.buf) > len(payload)+1 {
		t.Fatalf("buffer grew to %d bytes for a %d-byte frame", cap(r.buf), len(payload)+1)
	}
	if typ, p, err = r.Next(); err != nil || typ != TypeAbort || string(p) != "x" {
		t.Fatalf("frame after the large one: %s %q %v", typ, p, err)
	}
	if _, _, err = r.Next(); err != io.EOF {
		t.Fatalf("end of stream: %v, want io.EOF", err)
	}
}

// A frame over the Reader's cap is refused from its header alone.
func TestReaderRefusesOverCap(t *testing.T) {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], 1<<16+1)
	r := NewReader(bytes.NewReader(hdr[:]), 1<<16)
	if _, _, err := r.Next(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("frame over the cap: %v, want ErrFrameTooLarge", err)
	}
}

// Each request type's cap is the size of its largest well-formed frame:
// that frame passes a Reader capped at it, one byte more does not.
func TestMaxRequestFrameIsTight(t *testing.T) {
	ids := make([]chunk.ID, MaxBatch)
	for i := range ids {
		ids[i] = chunk.Sum([]byte{byte(i), byte(i >> 8)})
	}
	for _, frame := range [][]byte{
		AppendHave(nil, ids),
		AppendGet(nil, Prefetch, ids),
		AppendInfo(nil),
		AppendPushIDs(nil, ids[0]),
	} {
		typ := Type(frame[4])
		if got, want := len(frame)-4, MaxRequestFrame(typ); got != want {
			t.Errorf("%s: largest frame %d bytes, cap %d", typ, got, want)
		}
		if _, _, err := NewReader(bytes.NewReader(frame), MaxRequestFrame(typ)).Next(); err != nil {
			t.Errorf("%s at its cap: %v", typ, err)
		}
		over := Finish(append(bytes.Clone(frame), 0))
		if _, _, err := NewReader(bytes.NewReader(over), MaxRequestFrame(typ)).Next(); !errors.Is(err, ErrFrameTooLarge) {
			t.Errorf("%s one byte over its cap: %v, want ErrFrameTooLarge", typ, err)
		}
	}
	if MaxRequestFrame(TypePush) != MaxFrameSize {
		t.Errorf("push cap %d, want %d", MaxRequestFrame(TypePush), MaxFrameSize)
	}
}
