package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/seal"
)

// FuzzFrames feeds arbitrary bytes to the Reader and every decoder. Nothing
// may panic, and anything that decodes must re-encode to the same payload.
func FuzzFrames(f *testing.F) {
	c := chunks(2, 33)
	ids := []chunk.ID{c[0].ID, c[1].ID}
	seeds := [][]byte{
		AppendPush(nil, c),
		AppendPushAck(nil, []Status{StatusOK, StatusFull}, PushDigest(c)),
		AppendHave(nil, ids),
		AppendHaveAck(nil, []bool{true, false, true}),
		AppendGet(nil, Prefetch, ids),
		AppendGetAck(nil, []GetResult{{StatusOK, c[0].Data}, {Status: StatusMissing}}),
		AppendInfo(nil),
		AppendInfoAck(nil, Info{MemFree: 1, DiskFree: 2, Load: 3, Zone: "z"}),
		AppendInfoAck(nil, Info{MemFree: 1, Zone: "z", Downlink: 1e9}),
		AppendInfoAck(nil, Info{MemFree: 1, Zone: "z", Chunks: 7, ChunksKnown: true}),
		AppendError(nil, StatusRefused, "no"),
		AppendOpen(nil, Open{ID: MigrationID{1}, VM: "web1", Regions: []RegionInfo{{"mem", 1, 8192, 4096}}}),
		AppendHolders(nil, []Holder{{0, "12D3KooWdest"}, {1, "12D3KooWrelay"}}),
		AppendPlacements(nil, []Placement{{Region: 0, Index: 7, ID: c[0].ID, Holders: 3}}, false),
		AppendPlacements(nil, []Placement{{Region: 0, Index: 7, ID: c[0].ID, Holders: 3, Plain: c[1].ID}}, true),
		AppendPlacements(nil, []Placement{{Index: 7, ID: c[0].ID, Holders: 3}, {Index: 8, ID: c[1].ID, Holders: 3}, {Index: 9, ID: c[0].ID, Holders: 1}}, false),
		AppendOpen(nil, Open{ID: MigrationID{1}, VM: "web1", Regions: []RegionInfo{{"mem", 1, 8192, 4096}}, Secret: seal.Secret{7}}),
		AppendOpen(nil, Open{ID: MigrationID{1}, VM: "web1", Regions: []RegionInfo{{"mem", 1, 8192, 4096}}, PullDuringScatter: true}),
		AppendOpen(nil, Open{ID: MigrationID{1}, VM: "web1", Regions: []RegionInfo{{"mem", 1, 8192, 4096}}, Secret: seal.Secret{7}, PullDuringScatter: true}),
		AppendOpen(nil, Open{ID: MigrationID{1}, VM: "../../../escaped", Regions: []RegionInfo{{"mem", 1, 8192, 4096}}}),
		AppendOpen(nil, Open{ID: MigrationID{1}, VM: "web1", Regions: []RegionInfo{{"/../../victim", 2, 8192, 4096}}}),
		AppendOpen(nil, Open{ID: MigrationID{1}, VM: "web1", Regions: []RegionInfo{{"mem", 1, 8192, 4096}, {"mem", 1, 8192, 4096}}}),
		AppendOpen(nil, Open{ID: MigrationID{1}, VM: "web1", Regions: []RegionInfo{{"mem", 1, 1 << 42, 4096}}}),
		AppendDone(nil, c[1].ID, false),
		AppendDone(nil, c[1].ID, true),
		AppendAck(nil, StatusOK, ""),
		AppendDemand(nil, DemandReq{ID: MigrationID{2}, Region: 1, Index: 99}),
		AppendDemandAck(nil, StatusOK, c[0].Data),
		AppendDemandAck(nil, StatusMissing, nil),
		AppendDemandAck(nil, StatusZero, nil),
		AppendRelease(nil, Release{ID: MigrationID{3}, Chunks: ids}),
		AppendAbort(nil, "eviction failed"),
		AppendPushPlacements(nil, []PushPlacement{{Holders: 2, Digest: c[0].ID, Runs: []Run{{0, 7, 2}, {1, 0, 1}}}}),
		AppendPushIDs(nil, c[0].ID),
		AppendPushIDsAck(nil, StatusOK, ids),
		AppendPushIDsAck(nil, StatusMissing, nil),
		AppendHold(nil, Hold{Kind: HoldMigration, IDs: []MigrationID{{4}, {5}}, Dest: "12D3KooWdest"}),
		AppendHold(nil, Hold{Kind: HoldPut, IDs: []MigrationID{{6}}, Expire: 72 * time.Hour}),
		AppendRenew(nil, MigrationID{7}),
		AppendRemove(nil, MigrationID{8}),
		{0, 0, 0, 0},
		{0xff, 0xff, 0xff, 0xff, 1},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), 1<<16)
		for range 8 {
			typ, p, err := r.Next()
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrFrameTooLarge) && !errors.Is(err, ErrMalformed) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected reader error class: %v", err)
				}
				return
			}
			checkPayload(t, typ, p)
		}
	})
}

func checkPayload(t *testing.T, typ Type, p []byte) {
	var re []byte
	switch typ {
	case TypePush:
		v, err := DecodePush(p, nil)
		if err == nil {
			re = AppendPush(nil, v)
		}
	case TypePushAck:
		v, d, err := DecodePushAck(p, nil)
		if err == nil {
			re = AppendPushAck(nil, v, d)
		}
	case TypeHave:
		v, err := DecodeIDs(p, nil)
		if err == nil {
			re = AppendHave(nil, v)
		}
	case TypeHaveAck:
		v, err := DecodeHaveAck(p, nil)
		if err == nil && haveAckCanonical(p, len(v)) {
			re = AppendHaveAck(nil, v)
		}
	case TypeGet:
		prio, v, err := DecodeGet(p, nil)
		if err == nil {
			re = AppendGet(nil, prio, v)
		}
	case TypeGetAck:
		v, err := DecodeGetAck(p, nil)
		if err == nil {
			re = AppendGetAck(nil, v)
		}
	case TypeInfoAck:
		v, err := DecodeInfoAck(p)
		if err == nil {
			re = AppendInfoAck(nil, v)
		}
	case TypeError:
		v, err := DecodeError(p)
		if err == nil {
			re = AppendError(nil, v.Code, v.Message)
		}
	}
	switch typ {
	case TypeMigrateOpen:
		if v, err := DecodeOpen(p); err == nil {
			if err := v.CheckNames(); err != nil {
				t.Fatalf("decoded an open with bad names: %v", err)
			}
			re = AppendOpen(nil, v)
		}
	case TypeHolders:
		if v, err := DecodeHolders(p); err == nil {
			re = AppendHolders(nil, v)
		}
	case TypePlacements, TypeSealedPlacements:
		sealed := typ == TypeSealedPlacements
		if v, err := DecodePlacements(p, nil, sealed); err == nil {
			re = AppendPlacements(nil, v, sealed)
		}
	case TypeMigrateDone:
		if v, build, err := DecodeDone(p); err == nil {
			re = AppendDone(nil, v, build)
		}
	case TypeAck:
		if st, msg, err := DecodeAck(p); err == nil {
			re = AppendAck(nil, st, msg)
		}
	case TypeDemand:
		if v, err := DecodeDemand(p); err == nil {
			re = AppendDemand(nil, v)
		}
	case TypeDemandAck:
		if st, data, err := DecodeDemandAck(p); err == nil {
			re = AppendDemandAck(nil, st, data)
		}
	case TypeRelease:
		if v, err := DecodeRelease(p); err == nil {
			re = AppendRelease(nil, v)
		}
	case TypeAbort:
		if v, err := DecodeAbort(p); err == nil {
			re = AppendAbort(nil, v)
		}
	case TypePushPlacements:
		if v, err := DecodePushPlacements(p, nil); err == nil {
			re = AppendPushPlacements(nil, v)
		}
	case TypePushIDs:
		if v, err := DecodePushIDs(p); err == nil {
			re = AppendPushIDs(nil, v)
		}
	case TypePushIDsAck:
		if st, v, err := DecodePushIDsAck(p, nil); err == nil {
			re = AppendPushIDsAck(nil, st, v)
		}
	case TypeHold:
		if v, err := DecodeHold(p); err == nil {
			re = AppendHold(nil, v)
		}
	case TypeRenew, TypeRemove:
		if v, err := DecodeHoldID(p); err == nil {
			re = Finish(append(Begin(nil, typ), v[:]...))
		}
	}
	if re != nil && !bytes.Equal(re[headerSize:], p) {
		t.Fatalf("%s: re-encoding differs:\n got %x\nwant %x", typ, re[headerSize:], p)
	}
}

// haveAckCanonical reports whether the padding bits past n are zero: only
// then does re-encoding reproduce the payload byte for byte.
func haveAckCanonical(p []byte, n int) bool {
	if n%8 == 0 {
		return true
	}
	return p[len(p)-1]>>(n%8) == 0
}
