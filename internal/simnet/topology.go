package simnet

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/sgrelay/sg/internal/eviction"
	"github.com/sgrelay/sg/internal/units"
	"github.com/sgrelay/sg/internal/workload"
)

// Role is what a node does in a scenario.
type Role string

// Roles.
const (
	Source       Role = "source"
	Destination  Role = "destination"
	Intermediate Role = "intermediate"
	Bystander    Role = "bystander" // runs, holds nothing of the VM unless told
)

// Topology is a scenario: the nodes and their links, the VMs on the
// source, how they are evicted, how the destination runs them, and faults.
type Topology struct {
	Nodes []NodeSpec `toml:"node"`
	// Latency is the one-way latency between zones.
	Latency LatencySpec `toml:"latency"`
	VMs     []VMSpec    `toml:"vm"`
	Evict   EvictSpec   `toml:"evict"`
	Gather  GatherSpec  `toml:"gather"`
	Faults  []Fault     `toml:"fault"`
	// Seed makes node identities and loss decisions repeatable.
	Seed uint64 `toml:"seed"`
}

// NodeSpec is one node.
type NodeSpec struct {
	Name string `toml:"name"`
	Role Role   `toml:"role"`
	Zone string `toml:"zone"`
	// UpMbps and DownMbps are the link rates in Mbit/s.
	UpMbps   float64 `toml:"up_mbps"`
	DownMbps float64 `toml:"down_mbps"`
	// IngestMBps caps the bytes/s this node accepts by push (MB/s; 0: no
	// cap): a host protecting its foreground traffic.
	IngestMBps float64 `toml:"ingest_mbps"`
	// Loss is the fraction of this node's outgoing packets dropped.
	Loss float64 `toml:"loss"`
	// StoreMiB is the chunk store's memory budget (default 1024).
	StoreMiB int64 `toml:"store_mib"`
	// ForgetPushes makes the node remember no push's chunk IDs (as if
	// asked too late): a destination cannot place what the source placed
	// by push there, and must be sent the manifest.
	ForgetPushes bool `toml:"forget_pushes"`
}

// LatencySpec gives one-way latencies: Pairs override Zones, which
// override Default.
type LatencySpec struct {
	Default Duration `toml:"default"`
	// SameZone is the latency between nodes of one zone (default: Default).
	SameZone Duration        `toml:"same_zone"`
	Pairs    []PairLatency   `toml:"pair"`
	Changes  []LatencyChange `toml:"change"`
}

// PairLatency is the one-way latency between two named nodes, both ways.
type PairLatency struct {
	A      string   `toml:"a"`
	B      string   `toml:"b"`
	OneWay Duration `toml:"one_way"`
}

// LatencyChange sets a pair's one-way latency from a virtual time on.
type LatencyChange struct {
	At Duration `toml:"at"`
	PairLatency
}

// VMSpec is a generated VM on the source.
type VMSpec struct {
	Name string `toml:"name"`
	workload.Spec
	// MemBytes and DiskBytes are the sizes a scenario file gives
	// ("64MiB"): ParseTopology sets Spec's MemSize and DiskSize from them.
	MemBytes  Size `toml:"mem"`
	DiskBytes Size `toml:"disk"`
}

// Size is a byte count written with a unit ("64MiB", "1GiB") in scenario
// files.
type Size int64

// UnmarshalText parses a size.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := units.ParseSize(string(b))
	*s = Size(v)
	return err
}

// MarshalText writes a size in bytes.
func (s Size) MarshalText() ([]byte, error) { return []byte(strconv.FormatInt(int64(s), 10)), nil }

// EvictSpec is how the source evicts.
type EvictSpec struct {
	Direct   bool     `toml:"direct"`
	Replicas int      `toml:"replicas"`
	MaxMBps  float64  `toml:"max_mbps"` // cap on the source's pushes, MB/s
	Via      []string `toml:"via"`      // intermediates by name (default: every intermediate)
	Encrypt  bool     `toml:"encrypt"`  // seal every chunk at rest (sgctl evict --encrypt)
	// Redundancy erasure-codes the chunks over the targets, e.g. "4+1"
	// (sgctl evict --redundancy).
	Redundancy string `toml:"redundancy"`
	// None skips the eviction (a scenario that only gathers).
	None bool `toml:"none"`
	// UplinkUnknown evicts as from a source that does not know its
	// uplink: a fast destination then never pulls during the scatter.
	// (Every simulated node says its link rates, as an operator's
	// uplink/downlink settings would.)
	UplinkUnknown bool `toml:"uplink_unknown"`
}

// GatherSpec is how the destination runs the VM while it gathers.
type GatherSpec struct {
	NoPrefetch bool `toml:"no_prefetch"` // demand reads only (the baseline)
	// Trace replays the guest's reads at the destination from the moment
	// the migration opens; empty: no guest reads.
	Trace TraceSpec `toml:"trace"`
	// Verify compares every gathered byte with the source image.
	Verify bool `toml:"verify"`
	// KeepHolders keeps the holders' copies when the gather completes
	// (no release), so others can gather the VM from them afterwards.
	KeepHolders bool `toml:"keep_holders"`
}

// Fault happens at a virtual time after the eviction starts (or, with
// AfterET, after the eviction time).
type Fault struct {
	At      Duration `toml:"at"`
	AfterET bool     `toml:"after_et"`
	// Kill crashes the named node: its links go silent, then it stops.
	Kill string `toml:"kill"`
	// Cut silences the link between two named nodes, both ways.
	Cut []string `toml:"cut"`
}

// Duration is a time.Duration written as "20ms" in scenario files.
type Duration time.Duration

// UnmarshalText parses a Go duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// MarshalText writes a Go duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Validate reports the first thing wrong with t.
func (t *Topology) Validate() error {
	names := map[string]bool{}
	var src, dst int
	for i, n := range t.Nodes {
		switch {
		case n.Name == "":
			return fmt.Errorf("node %d has no name", i)
		case names[n.Name]:
			return fmt.Errorf("node name %q used twice", n.Name)
		case n.UpMbps <= 0 || n.DownMbps <= 0:
			return fmt.Errorf("node %q: up_mbps and down_mbps must be positive", n.Name)
		case n.Loss < 0 || n.Loss >= 1:
			return fmt.Errorf("node %q: loss %.3f is not in [0, 1)", n.Name, n.Loss)
		}
		names[n.Name] = true
		switch n.Role {
		case Source:
			src++
		case Destination:
			dst++
		case Intermediate, Bystander:
		default:
			return fmt.Errorf("node %q: unknown role %q (want source, destination, intermediate or bystander)", n.Name, n.Role)
		}
	}
	if src != 1 || dst != 1 {
		return fmt.Errorf("want exactly one source and one destination, have %d and %d", src, dst)
	}
	if len(t.VMs) == 0 && !t.Evict.None {
		return errors.New("no VM to evict")
	}
	for _, v := range t.VMs {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("vm %q: %w", v.Name, err)
		}
	}
	known := func(what, name string) error {
		if !names[name] {
			return fmt.Errorf("%s: no node named %q", what, name)
		}
		return nil
	}
	if t.Evict.Redundancy != "" {
		if _, err := eviction.ParseRedundancy(t.Evict.Redundancy); err != nil {
			return fmt.Errorf("evict: %w", err)
		}
	}
	for _, v := range t.Evict.Via {
		if err := known("evict.via", v); err != nil {
			return err
		}
	}
	for _, p := range t.Latency.Pairs {
		if err := errors.Join(known("latency pair", p.A), known("latency pair", p.B)); err != nil {
			return err
		}
	}
	for _, c := range t.Latency.Changes {
		if err := errors.Join(known("latency change", c.A), known("latency change", c.B)); err != nil {
			return err
		}
	}
	for _, f := range t.Faults {
		switch {
		case f.Kill != "" && len(f.Cut) == 0:
			if err := known("fault kill", f.Kill); err != nil {
				return err
			}
		case f.Kill == "" && len(f.Cut) == 2:
			if err := errors.Join(known("fault cut", f.Cut[0]), known("fault cut", f.Cut[1])); err != nil {
				return err
			}
		default:
			return errors.New("a fault is either kill = NODE or cut = [NODE, NODE]")
		}
	}
	return t.Gather.Trace.Validate()
}

// node returns the index of the named node, -1 if none.
func (t *Topology) node(name string) int {
	for i, n := range t.Nodes {
		if n.Name == name {
			return i
		}
	}
	return -1
}

// role returns the index of the first node with role r, -1 if none.
func (t *Topology) role(r Role) int {
	for i, n := range t.Nodes {
		if n.Role == r {
			return i
		}
	}
	return -1
}
