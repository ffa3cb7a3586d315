package ratelimit

import (
	"context"
	"testing"
	"time"
)

func TestUnlimited(t *testing.T) {
	l := New(0)
	for range 1000 {
		if err := l.Wait(t.Context(), 1<<20); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWaitHonoursContext(t *testing.T) {
	l := New(1) // one byte a second: the second call must wait
	_ = l.Wait(t.Context(), 8<<20)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := l.Wait(ctx, 8<<20); err == nil {
		t.Fatal("Wait returned without tokens or cancellation")
	}
}

// The average rate is asserted in virtual time elsewhere (simnet); here we
// check the bucket's arithmetic: after the burst, n bytes cost n/rate.
func TestBucketArithmetic(t *testing.T) {
	l := New(100 << 20)
	l.tokens = 0
	start := time.Now()
	l.last = start
	if err := l.Wait(t.Context(), 1<<20); err != nil {
		t.Fatal(err)
	}
	if l.tokens > 1<<20 {
		t.Fatalf("tokens %v after paying for 1 MiB", l.tokens)
	}
}
