package simnet

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/sgrelay/sg/internal/fetch"
)

// TraceSpec describes the guest's reads at the destination: bursts of
// reads near a hot spot, then a jump elsewhere, the locality post-copy
// prefetching relies on.
type TraceSpec struct {
	Reads  int      `toml:"reads"`  // page reads in all (0: the guest reads nothing)
	Region int      `toml:"region"` // region read (0: memory)
	Burst  int      `toml:"burst"`  // reads near one hot spot before jumping (default 32)
	Spread int      `toml:"spread"` // pages either side of the hot spot (default 16)
	Think  Duration `toml:"think"`  // guest compute between reads
	Seed   uint64   `toml:"seed"`
}

// Validate reports the first thing wrong with t.
func (t TraceSpec) Validate() error {
	if t.Reads < 0 || t.Burst < 0 || t.Spread < 0 || t.Think < 0 || t.Region < 0 {
		return fmt.Errorf("trace: negative field in %+v", t)
	}
	return nil
}

// pages returns the page indexes read, in order, for a region of n pages.
func (t TraceSpec) pages(n int64) []int64 {
	burst, spread := t.Burst, t.Spread
	if burst == 0 {
		burst = 32
	}
	if spread == 0 {
		spread = 16
	}
	rng := rand.New(rand.NewPCG(t.Seed, 0x7ace))
	out := make([]int64, 0, t.Reads)
	var center int64
	for i := range t.Reads {
		if i%burst == 0 {
			center = rng.Int64N(n)
		}
		p := center + int64(rng.IntN(2*spread+1)-spread)
		out = append(out, min(max(p, 0), n-1))
	}
	return out
}

// TraceResult is what the guest saw.
type TraceResult struct {
	Reads     int
	FirstRead time.Time     // when the first read was served
	Wait      time.Duration // total time reads blocked
	MaxWait   time.Duration
	Err       error
}

// ReplayTrace plays t's reads against g as the guest would: each read of
// one page blocks until the page is here, then the guest thinks.
func ReplayTrace(ctx context.Context, g *fetch.Gatherer, t TraceSpec, pageSize int) TraceResult {
	var out TraceResult
	if t.Reads == 0 {
		return out
	}
	regions := g.Regions()
	if t.Region >= len(regions) {
		out.Err = fmt.Errorf("trace reads region %d; the VM has %d", t.Region, len(regions))
		return out
	}
	size := int64(regions[t.Region].Size)
	buf := make([]byte, pageSize)
	for _, p := range t.pages(size / int64(pageSize)) {
		begin := time.Now()
		if _, err := g.ReadAt(ctx, t.Region, buf, p*int64(pageSize)); err != nil {
			out.Err = fmt.Errorf("read of page %d: %w", p, err)
			return out
		}
		w := time.Since(begin)
		if out.Reads == 0 {
			out.FirstRead = time.Now()
		}
		out.Reads++
		out.Wait += w
		out.MaxWait = max(out.MaxWait, w)
		if t.Think > 0 {
			select {
			case <-ctx.Done():
				out.Err = ctx.Err()
				return out
			case <-time.After(time.Duration(t.Think)):
			}
		}
	}
	return out
}
