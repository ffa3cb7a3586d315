// Package names holds the rules for the names a peer sends: VM names and
// region names. They end up in reports, FUSE views and file names, so a
// name that passes is safe as one path element: no separator, not "." or
// "..", nothing outside a small alphabet. The rules live here, with no
// dependencies, so the wire and manifest decoders and the VM registry all
// apply the same ones.
package names

import (
	"errors"
	"fmt"
)

// Length limits.
const (
	MaxVMLen     = 255 // what one length byte carries
	MaxRegionLen = 64
)

// Errors, for errors.Is.
var (
	ErrBadVM     = errors.New("bad VM name")
	ErrBadRegion = errors.New("bad region name")
)

// CheckVM refuses a VM name that is empty, longer than MaxVMLen, "." or
// "..", or not made of letters, digits, '-', '_' and '.'.
func CheckVM(name string) error {
	if name == "" || len(name) > MaxVMLen {
		return fmt.Errorf("%w: %q (1..%d characters)", ErrBadVM, name, MaxVMLen)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%w: %q", ErrBadVM, name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(regionChar(c) || c >= 'A' && c <= 'Z' || c == '_') {
			return fmt.Errorf("%w: %q (letters, digits, - _ . only)", ErrBadVM, name)
		}
	}
	return nil
}

// CheckRegion refuses a region name outside [a-z0-9][a-z0-9._-]{0,63}:
// the names sg gives regions (mem, mem0, disk0, state, qemu, kernel,
// initrd) and nothing that could be read as a path.
func CheckRegion(name string) error {
	if name == "" || len(name) > MaxRegionLen {
		return fmt.Errorf("%w: %q (1..%d characters)", ErrBadRegion, name, MaxRegionLen)
	}
	if c := name[0]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
		return fmt.Errorf("%w: %q (must start with a lower-case letter or digit)", ErrBadRegion, name)
	}
	for i := 0; i < len(name); i++ {
		if !regionChar(name[i]) {
			return fmt.Errorf("%w: %q (lower-case letters, digits, . _ - only)", ErrBadRegion, name)
		}
	}
	return nil
}

// CheckRegions checks every region name and that no two are the same (a
// duplicate would share a file).
func CheckRegions(regions []string) error {
	seen := make(map[string]bool, len(regions))
	for _, r := range regions {
		if err := CheckRegion(r); err != nil {
			return err
		}
		if seen[r] {
			return fmt.Errorf("%w: %q appears twice", ErrBadRegion, r)
		}
		seen[r] = true
	}
	return nil
}

// regionChar reports whether c is in the region alphabet: a-z, 0-9, '.', '_', '-'.
func regionChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}
