package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/seal"
)

func chunks(n, size int) []Chunk {
	out := make([]Chunk, n)
	for i := range out {
		d := bytes.Repeat([]byte{byte(i + 1)}, size)
		out[i] = Chunk{ID: chunk.Sum(d), Data: d}
	}
	return out
}

func TestRoundTrips(t *testing.T) {
	var stream bytes.Buffer
	push := chunks(3, 4096)
	ids := []chunk.ID{push[0].ID, push[1].ID}
	stream.Write(AppendPush(nil, push))
	stream.Write(AppendPushAck(nil, []Status{StatusOK, StatusRefused, StatusFull}, PushDigest(push)))
	stream.Write(AppendHave(nil, ids))
	stream.Write(AppendHaveAck(nil, []bool{true, false, true, true, false, false, false, false, true}))
	stream.Write(AppendGet(nil, Demand, ids))
	stream.Write(AppendGetAck(nil, []GetResult{{StatusOK, push[2].Data}, {Status: StatusMissing}}))
	stream.Write(AppendInfo(nil))
	stream.Write(AppendInfoAck(nil, Info{MemFree: 1 << 30, DiskFree: 5 << 40, Load: 7, Zone: "rack-3"}))
	stream.Write(AppendInfoAck(nil, Info{MemFree: 1, Zone: "z", Downlink: 125e6}))
	stream.Write(AppendInfoAck(nil, Info{Zone: "z", ChunksKnown: true}))
	stream.Write(AppendError(nil, StatusRefused, "not admitted"))

	r := NewReader(&stream, 0)
	p, err := r.Expect(TypePush)
	must(t, err)
	gotPush, err := DecodePush(p, nil)
	must(t, err)
	if len(gotPush) != 3 || gotPush[2].ID != (chunk.ID{}) || !bytes.Equal(gotPush[2].Data, push[2].Data) {
		t.Fatalf("push round trip mismatch (IDs do not travel)")
	}
	p, err = r.Expect(TypePushAck)
	must(t, err)
	st, digest, err := DecodePushAck(p, nil)
	must(t, err)
	if len(st) != 3 || st[1] != StatusRefused || st[2] != StatusFull || digest != PushDigest(push) {
		t.Fatalf("statuses %v, digest %x", st, digest)
	}
	if PushDigest(push[:2]) == digest || PushDigest([]Chunk{push[1], push[0], push[2]}) == digest {
		t.Fatal("the digest does not depend on which chunks, in which order")
	}
	p, err = r.Expect(TypeHave)
	must(t, err)
	gotIDs, err := DecodeIDs(p, nil)
	must(t, err)
	if len(gotIDs) != 2 || gotIDs[1] != ids[1] {
		t.Fatalf("have ids %v", gotIDs)
	}
	p, err = r.Expect(TypeHaveAck)
	must(t, err)
	held, err := DecodeHaveAck(p, nil)
	must(t, err)
	want := []bool{true, false, true, true, false, false, false, false, true}
	if len(held) != len(want) {
		t.Fatalf("have-ack len %d", len(held))
	}
	for i := range want {
		if held[i] != want[i] {
			t.Fatalf("have-ack bit %d = %v", i, held[i])
		}
	}
	p, err = r.Expect(TypeGet)
	must(t, err)
	prio, gotIDs, err := DecodeGet(p, nil)
	must(t, err)
	if prio != Demand || len(gotIDs) != 2 {
		t.Fatalf("get: prio %d ids %d", prio, len(gotIDs))
	}
	p, err = r.Expect(TypeGetAck)
	must(t, err)
	res, err := DecodeGetAck(p, nil)
	must(t, err)
	if len(res) != 2 || res[0].Status != StatusOK || !bytes.Equal(res[0].Data, push[2].Data) || res[1].Status != StatusMissing {
		t.Fatalf("get-ack %v", res)
	}
	_, err = r.Expect(TypeInfo)
	must(t, err)
	p, err = r.Expect(TypeInfoAck)
	must(t, err)
	info, err := DecodeInfoAck(p)
	must(t, err)
	if info != (Info{MemFree: 1 << 30, DiskFree: 5 << 40, Load: 7, Zone: "rack-3"}) {
		t.Fatalf("info %+v", info)
	}
	p, err = r.Expect(TypeInfoAck)
	must(t, err)
	if info, err = DecodeInfoAck(p); err != nil || info != (Info{MemFree: 1, Zone: "z", Downlink: 125e6}) {
		t.Fatalf("info with a downlink: %+v, %v", info, err)
	}
	p, err = r.Expect(TypeInfoAck)
	must(t, err)
	if info, err = DecodeInfoAck(p); err != nil || info != (Info{Zone: "z", ChunksKnown: true}) {
		t.Fatalf("info of an empty store: %+v, %v", info, err)
	}
	_, err = r.Expect(TypePush)
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != StatusRefused || re.Message != "not admitted" {
		t.Fatalf("error frame: %v", err)
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("clean end: %v", err)
	}
}

func TestReaderRefusesOversizedFrame(t *testing.T) {
	// A header announcing 100 MiB: refused before any payload is read.
	r := NewReader(bytes.NewReader([]byte{0x06, 0x40, 0, 0, byte(TypePush)}), 0)
	if _, _, err := r.Next(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v, want ErrFrameTooLarge", err)
	}
	small := NewReader(bytes.NewReader(AppendPush(nil, chunks(1, 4096))), 1024)
	if _, _, err := small.Next(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v, want ErrFrameTooLarge with a 1 KiB cap", err)
	}
}

func TestReaderTruncated(t *testing.T) {
	frame := AppendPush(nil, chunks(2, 100))
	for _, cut := range []int{2, 5, len(frame) - 1} {
		r := NewReader(bytes.NewReader(frame[:cut]), 0)
		if _, _, err := r.Next(); err == nil || err == io.EOF {
			t.Fatalf("cut at %d: err = %v, want an unexpected-EOF error", cut, err)
		}
	}
}

func TestDecodersRejectMalformed(t *testing.T) {
	good := AppendPush(nil, chunks(2, 64))[headerSize:]
	cases := []struct {
		name   string
		decode func() error
	}{
		{"push empty", func() error { _, err := DecodePush(nil, nil); return err }},
		{"push trailing", func() error { _, err := DecodePush(append(append([]byte{}, good...), 1), nil); return err }},
		{"push short", func() error { _, err := DecodePush(good[:len(good)-1], nil); return err }},
		{"push zero-length chunk", func() error {
			_, err := DecodePush(append([]byte{0, 1}, make([]byte, 4+64)...), nil)
			return err
		}},
		{"push count over cap", func() error { _, err := DecodePush([]byte{0xff, 0xff}, nil); return err }},
		{"push-ack unknown status", func() error {
			_, _, err := DecodePushAck(append([]byte{0, 1, 200}, make([]byte, chunk.Size)...), nil)
			return err
		}},
		{"push-ack without digest", func() error { _, _, err := DecodePushAck([]byte{0, 1, 0}, nil); return err }},
		{"ids misaligned", func() error { _, err := DecodeIDs([]byte{0, 1, 1, 2, 3}, nil); return err }},
		{"have-ack short", func() error { _, err := DecodeHaveAck([]byte{0, 9, 1}, nil); return err }},
		{"get bad prio", func() error { _, _, err := DecodeGet([]byte{9, 0, 0}, nil); return err }},
		{"get-ack oversize", func() error {
			_, err := DecodeGetAck([]byte{0, 1, 0, 0xff, 0xff, 0xff, 0xff}, nil)
			return err
		}},
		{"info short", func() error { _, err := DecodeInfoAck(make([]byte, 20)); return err }},
		{"info zone len", func() error { _, err := DecodeInfoAck(append(make([]byte, 20), 5, 'a')); return err }},
		{"error len", func() error { _, err := DecodeError([]byte{1, 0, 9, 'x'}); return err }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.decode(); !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestDecodeAllocFree(t *testing.T) {
	frame := AppendPush(nil, chunks(16, 4096))
	dst := make([]Chunk, 0, 16)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		dst, err = DecodePush(frame[headerSize:], dst)
		if err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("DecodePush allocates %.0f times per frame", allocs)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Open's optional trailers (a secret, the pull flag) round-trip in every
// combination, and a flags byte with an unknown bit is refused.
func TestOpenTrailers(t *testing.T) {
	base := Open{ID: MigrationID{9}, VM: "web1", Regions: []RegionInfo{{"mem", 1, 8192, 4096}}}
	for _, o := range []Open{base,
		{ID: base.ID, VM: base.VM, Regions: base.Regions, Secret: seal.Secret{3}},
		{ID: base.ID, VM: base.VM, Regions: base.Regions, PullDuringScatter: true},
		{ID: base.ID, VM: base.VM, Regions: base.Regions, Secret: seal.Secret{3}, PullDuringScatter: true},
	} {
		frame := AppendOpen(nil, o)
		got, err := DecodeOpen(frame[5:])
		if err != nil || got.Secret != o.Secret || got.PullDuringScatter != o.PullDuringScatter || got.VM != o.VM {
			t.Fatalf("open %+v: decoded %+v, %v", o, got, err)
		}
	}
	frame := AppendOpen(nil, base)
	if _, err := DecodeOpen(append(frame[5:], 0x02)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("unknown flag accepted: %v", err)
	}
}

// Placements at consecutive positions with the same holders share a run
// header; anything else starts a new run; the decoder gives back the same
// placements, and refuses runs that should have been one.
func TestPlacementRuns(t *testing.T) {
	c := chunks(4, 64)
	ps := []Placement{
		{Region: 0, Index: 7, ID: c[0].ID, Holders: 1},
		{Region: 0, Index: 8, ID: c[1].ID, Holders: 1},
		{Region: 0, Index: 9, ID: c[2].ID, Holders: 1},
		{Region: 0, Index: 10, ID: c[3].ID, Holders: 2}, // other holders
		{Region: 1, Index: 11, ID: c[0].ID, Holders: 2}, // other region
		{Region: 1, Index: 13, ID: c[1].ID, Holders: 2}, // a gap
	}
	frame := AppendPlacements(nil, ps, false)
	if want := headerSize + 2 + 4*runHeaderSize + len(ps)*chunk.Size; len(frame) != want {
		t.Fatalf("frame of %d bytes, want %d (four runs)", len(frame), want)
	}
	got, err := DecodePlacements(frame[headerSize:], nil, false)
	must(t, err)
	if len(got) != len(ps) {
		t.Fatalf("%d placements back, want %d", len(got), len(ps))
	}
	for i := range ps {
		if got[i] != ps[i] {
			t.Fatalf("placement %d: %+v, want %+v", i, got[i], ps[i])
		}
	}
	// Two runs that should have been one: 7 (count 1) then 8 (count 1).
	run := func(index uint64, id chunk.ID) []byte {
		b := binary.BigEndian.AppendUint16(nil, 0)
		b = binary.BigEndian.AppendUint64(b, index)
		b = binary.BigEndian.AppendUint16(b, 1)
		b = binary.BigEndian.AppendUint32(b, 1)
		return append(b, id[:]...)
	}
	split := append(append([]byte{0, 2}, run(7, c[0].ID)...), run(8, c[1].ID)...)
	if _, err := DecodePlacements(split, nil, false); !errors.Is(err, ErrMalformed) {
		t.Fatalf("split run: %v, want ErrMalformed", err)
	}
	for name, p := range map[string][]byte{
		"count over n":  append([]byte{0, 1}, append(run(7, c[0].ID)[:10], 0, 2, 0, 0, 0, 1)...),
		"zero count":    append([]byte{0, 1}, append(run(7, c[0].ID)[:10], 0, 0, 0, 0, 0, 1)...),
		"trailing":      append(append([]byte{0, 1}, run(7, c[0].ID)...), 9),
		"short entries": append([]byte{0, 1}, run(7, c[0].ID)[:runHeaderSize+5]...),
		"overflow":      append(append([]byte{0, 2}, run(^uint64(0), c[0].ID)[:10]...), append([]byte{0, 2, 0, 0, 0, 1}, make([]byte, 2*chunk.Size)...)...),
	} {
		if _, err := DecodePlacements(p, nil, false); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func TestMigrationIDJSON(t *testing.T) {
	id := MigrationID{0xab, 1}
	b, err := json.Marshal(map[string]MigrationID{"id": id})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"id":"ab010000000000000000000000000000"}`; string(b) != want {
		t.Fatalf("JSON %s, want %s", b, want)
	}
}
