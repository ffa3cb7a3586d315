package wire

import (
	"errors"
	"testing"

	"github.com/sgrelay/sg/internal/chunk"
)

func TestPushPlacementsRoundTrip(t *testing.T) {
	c := chunks(5, 40)
	ids := make([]chunk.ID, len(c))
	for i := range c {
		ids[i] = c[i].ID
	}
	var runs []Run
	for _, at := range []struct {
		region uint16
		index  uint64
	}{{0, 7}, {0, 8}, {0, 9}, {1, 0}, {0, 3}} {
		runs = AppendRuns(runs, at.region, at.index)
	}
	if len(runs) != 3 || runs[0] != (Run{0, 7, 3}) {
		t.Fatalf("runs %v, want [{0 7 3} {1 0 1} {0 3 1}]", runs)
	}
	pp := PushPlacement{Holders: 4, Digest: PushDigest(c), Runs: runs}
	frame := AppendPushPlacements(nil, []PushPlacement{pp, {Holders: 1, Digest: ids[0], Runs: []Run{{2, 100, 1}}}})
	got, err := DecodePushPlacements(frame[headerSize:], nil)
	if err != nil || len(got) != 2 || got[0].Positions() != 5 || got[1].Runs[0] != (Run{2, 100, 1}) {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	ps, err := got[0].Placements(ids, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ps[3] != (Placement{Region: 1, Index: 0, ID: ids[3], Holders: 4}) || ps[4].Index != 3 {
		t.Fatalf("placements %+v", ps)
	}
	// IDs that are not the push's: refused, nothing placed.
	wrong := append([]chunk.ID(nil), ids...)
	wrong[2][0] ^= 1
	if _, err := got[0].Placements(wrong, nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("wrong IDs: %v", err)
	}
	if _, err := got[0].Placements(ids[:4], nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("too few IDs: %v", err)
	}
}

func TestPushPlacementsMalformed(t *testing.T) {
	d := chunk.Sum([]byte("x"))
	enc := func(pps ...PushPlacement) []byte { return AppendPushPlacements(nil, pps)[headerSize:] }
	for name, p := range map[string][]byte{
		"empty":           {},
		"no pushes":       enc(),
		"no holder":       enc(PushPlacement{Digest: d, Runs: []Run{{0, 1, 1}}}),
		"zero digest":     enc(PushPlacement{Holders: 1, Runs: []Run{{0, 1, 1}}}),
		"no runs":         enc(PushPlacement{Holders: 1, Digest: d}),
		"empty run":       enc(PushPlacement{Holders: 1, Digest: d, Runs: []Run{{0, 1, 0}}}),
		"mergeable runs":  enc(PushPlacement{Holders: 1, Digest: d, Runs: []Run{{0, 1, 2}, {0, 3, 1}}}),
		"overflowing run": enc(PushPlacement{Holders: 1, Digest: d, Runs: []Run{{0, ^uint64(0), 2}}}),
		"too many":        enc(PushPlacement{Holders: 1, Digest: d, Runs: []Run{{0, 0, MaxBatch}, {1, 0, 1}}}),
		"trailing":        append(enc(PushPlacement{Holders: 1, Digest: d, Runs: []Run{{0, 1, 1}}}), 0),
		"truncated":       enc(PushPlacement{Holders: 1, Digest: d, Runs: []Run{{0, 1, 1}}})[:20],
	} {
		if _, err := DecodePushPlacements(p, nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	if _, _, err := DecodePushIDsAck([]byte{byte(StatusMissing), 0}, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("missing with a body: %v", err)
	}
	if _, err := DecodePushIDs(d[:31]); !errors.Is(err, ErrMalformed) {
		t.Errorf("short digest: %v", err)
	}
}
