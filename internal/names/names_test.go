package names

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckVM(t *testing.T) {
	for _, ok := range []string{"web1", "Web-1_a.b", "a", strings.Repeat("x", MaxVMLen), ".hidden", "..."} {
		if err := CheckVM(ok); err != nil {
			t.Errorf("CheckVM(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "../../../escaped", "a/b", "/abs", "a\\b", "a b", "a\x00b", "é", strings.Repeat("x", MaxVMLen+1)} {
		if err := CheckVM(bad); !errors.Is(err, ErrBadVM) {
			t.Errorf("CheckVM(%q) = %v, want ErrBadVM", bad, err)
		}
	}
}

func TestCheckRegion(t *testing.T) {
	for _, ok := range []string{"mem", "mem0", "mem12", "disk0", "state", "qemu", "kernel", "initrd", "image.raw", "0", "a-b_c.d", strings.Repeat("x", MaxRegionLen)} {
		if err := CheckRegion(ok); err != nil {
			t.Errorf("CheckRegion(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", ".x", "-x", "_x", "/../../victim", "a/b", "Mem", "a b", "a\x00", strings.Repeat("x", MaxRegionLen+1)} {
		if err := CheckRegion(bad); !errors.Is(err, ErrBadRegion) {
			t.Errorf("CheckRegion(%q) = %v, want ErrBadRegion", bad, err)
		}
	}
}

func TestCheckRegionsDuplicate(t *testing.T) {
	if err := CheckRegions([]string{"mem", "disk0", "state"}); err != nil {
		t.Fatal(err)
	}
	if err := CheckRegions([]string{"mem", "disk0", "mem"}); !errors.Is(err, ErrBadRegion) {
		t.Fatalf("duplicate region: %v, want ErrBadRegion", err)
	}
}
