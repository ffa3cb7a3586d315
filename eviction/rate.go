package eviction

import (
	"context"
	"sync"
	"time"
)

// rateLimiter is a token bucket over bytes, shared by every push stream of
// an eviction. A burst of a quarter second keeps several batches flowing
// while holding the average to the cap.
type rateLimiter struct {
	rate   float64 // bytes per second; 0: unlimited
	burst  float64
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newRateLimiter(bytesPerSec int64) *rateLimiter {
	r := &rateLimiter{rate: float64(bytesPerSec)}
	r.burst = max(r.rate/4, 4<<20)
	r.tokens = r.burst
	r.last = time.Now()
	return r
}

// wait blocks until n bytes may be sent.
func (r *rateLimiter) wait(ctx context.Context, n int) error {
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
		need := time.Duration((float64(n) - r.tokens) / r.rate * float64(time.Second))
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
