// Package ratelimit is a token bucket over bytes, shared by goroutines: it
// caps an eviction's pushes (--max-rate) and a node's intake
// (--ingest-rate: pushes and bulk prefetch).
package ratelimit

import (
	"context"
	"sync"
	"time"
)

// Limiter is a token bucket over bytes. A burst of a tenth of a second (at
// least 1 MiB, four push batches) keeps batches flowing while holding the
// average to the cap; a longer one would let a capped receiver look
// several times faster than its cap at the start, and be sent more than it
// can take. The zero rate means unlimited.
type Limiter struct {
	rate   float64 // bytes per second; 0: unlimited
	burst  float64
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// New returns a limiter of bytesPerSec (0: unlimited).
func New(bytesPerSec int64) *Limiter {
	r := &Limiter{rate: float64(bytesPerSec)}
	r.burst = max(r.rate/10, 1<<20)
	r.tokens = r.burst
	r.last = time.Now()
	return r
}

// Charge counts n bytes that passed without waiting (traffic that must
// not be delayed, such as a guest's demand reads): later Waits pay for it.
func (r *Limiter) Charge(n int) {
	if r.rate <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	r.tokens = min(r.burst, r.tokens+now.Sub(r.last).Seconds()*r.rate) - float64(n)
	r.last = now
}

// Wait blocks until n bytes may pass.
func (r *Limiter) Wait(ctx context.Context, n int) error {
	if r.rate <= 0 {
		return nil
	}
	for {
		r.mu.Lock()
		now := time.Now()
		r.tokens = min(r.burst, r.tokens+now.Sub(r.last).Seconds()*r.rate)
		r.last = now
		if r.tokens >= float64(n) || r.tokens >= r.burst {
			r.tokens -= float64(n)
			r.mu.Unlock()
			return nil
		}
		// At least a little: a wait rounded down to nothing would spin
		// (forever, where time only moves when everyone waits: simnet).
		need := max(time.Duration((float64(n)-r.tokens)/r.rate*float64(time.Second)), 50*time.Microsecond)
		r.mu.Unlock()
		t := time.NewTimer(need)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}
