package simnet

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// LoadTopology reads a scenario file (TOML; see internal/simnet/scenarios for
// examples) and validates it. A key the format does not have is an error,
// not a silently ignored typo.
func LoadTopology(path string) (*Topology, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	t, err := ParseTopology(string(b))
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", path, err)
	}
	return t, nil
}

// ParseTopology parses and validates a scenario in TOML.
func ParseTopology(text string) (*Topology, error) {
	var t Topology
	md, err := toml.Decode(text, &t)
	if err != nil {
		return nil, err
	}
	if extra := md.Undecoded(); len(extra) > 0 {
		keys := make([]string, len(extra))
		for i, k := range extra {
			keys[i] = k.String()
		}
		slices.Sort(keys)
		return nil, fmt.Errorf("unknown keys: %s", strings.Join(keys, ", "))
	}
	for i := range t.VMs {
		v := &t.VMs[i]
		v.MemSize, v.DiskSize = int64(v.MemBytes), int64(v.DiskBytes)
		if v.PageSize == 0 {
			v.PageSize = 4096
		}
		if v.DiskSize > 0 && v.DiskBlock == 0 {
			v.DiskBlock = 64 << 10
		}
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}
