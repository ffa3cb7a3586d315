package wire

import (
	"errors"
	"strings"
	"testing"

	"github.com/sgrelay/sg/internal/names"
)

// An Open whose VM or region names could be read as paths, or break the
// name rules in any other way, is refused where it is decoded.
func TestDecodeOpenRefusesBadNames(t *testing.T) {
	good := RegionInfo{Name: "mem", Kind: 1, Size: 8192, ChunkSize: 4096}
	region := func(name string) RegionInfo { r := good; r.Name = name; return r }
	for _, c := range []struct {
		vm      string
		regions []RegionInfo
		want    error
	}{
		{"../../../escaped", []RegionInfo{good}, names.ErrBadVM},
		{"..", []RegionInfo{good}, names.ErrBadVM},
		{"a/b", []RegionInfo{good}, names.ErrBadVM},
		{"", []RegionInfo{good}, names.ErrBadVM},
		{"web1", []RegionInfo{region("/../../victim")}, names.ErrBadRegion},
		{"web1", []RegionInfo{region("..")}, names.ErrBadRegion},
		{"web1", []RegionInfo{region(".")}, names.ErrBadRegion},
		{"web1", []RegionInfo{region("disk/0")}, names.ErrBadRegion},
		{"web1", []RegionInfo{region("Mem")}, names.ErrBadRegion},
		{"web1", []RegionInfo{region(strings.Repeat("m", names.MaxRegionLen+1))}, names.ErrBadRegion},
		{"web1", []RegionInfo{good, region("mem")}, names.ErrBadRegion},
	} {
		frame := AppendOpen(nil, Open{ID: MigrationID{1}, VM: c.vm, Regions: c.regions})
		_, err := DecodeOpen(frame[5:])
		if !errors.Is(err, c.want) || !errors.Is(err, ErrMalformed) {
			t.Errorf("open of VM %q regions %+v: %v, want %v and ErrMalformed", c.vm, c.regions, err, c.want)
		}
	}
	// The names sg itself gives regions pass.
	var rs []RegionInfo
	for _, n := range []string{"mem", "mem0", "mem1", "disk0", "disk12", "state", "qemu", "kernel", "initrd"} {
		rs = append(rs, region(n))
	}
	frame := AppendOpen(nil, Open{ID: MigrationID{1}, VM: "Web-1_a.b", Regions: rs})
	if o, err := DecodeOpen(frame[5:]); err != nil || len(o.Regions) != len(rs) {
		t.Fatalf("honest open: %+v, %v", o, err)
	}
}
