package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/workload"
)

// TestMaxRateCapsTheSource evicts a 24 MiB VM of unique pages under
// --max-rate spelt in bits per second both ways ("100Mbit", "100Mbps"):
// the bytes that crossed the wire over the eviction time are 100 Mbit/s,
// not the 800 Mbit/s of a rate read as bytes. It also finds the node's
// sg_build_info.
func TestMaxRateCapsTheSource(t *testing.T) {
	c := startCluster(t, "src", "dst", "r1")
	src, dst := c.Nodes[0], c.Nodes[1]
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if v, err := src.Metric(ctx, "sg_build_info"); err != nil || v != 1 {
		t.Errorf("sg_build_info = %v, %v; want 1", v, err)
	}
	const want = 100e6 // bits per second
	for i, rate := range []string{"100Mbit", "100Mbps"} {
		t.Run(rate, func(t *testing.T) {
			name := "vm-" + rate
			addVM(t, ctx, src, name, workload.Spec{Seed: uint64(100 + i), BaseSeed: uint64(200 + i), MemSize: 24 << 20, PageSize: 4096})
			var res api.EvictResult
			if err := src.SgctlJSON(ctx, &res, "evict", "vm", name, "--to", dst.PeerID, "--max-rate", rate); err != nil {
				t.Fatal(err)
			}
			var wire int64
			for _, b := range res.SentBytes {
				wire += b
			}
			if wire < 24<<20 {
				t.Fatalf("%d bytes crossed the wire, want the VM's 24 MiB at least", wire)
			}
			got := float64(wire) * 8 / res.ET.Seconds()
			t.Logf("--max-rate %s: %d bytes in %v = %.1f Mbit/s", rate, wire, res.ET, got/1e6)
			// The limiter's burst (a tenth of a second) lets the start run
			// ahead by about 5% of this VM; a rate read as bytes would be 8x.
			if got < 0.85*want || got > 1.15*want {
				t.Fatalf("--max-rate %s moved %.1f Mbit/s, want 100 Mbit/s ± 15%%", rate, got/1e6)
			}
			waitGathered(t, ctx, dst, name)
		})
	}
}
