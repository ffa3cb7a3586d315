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

// With an empty bucket, 1 MiB at 100 MiB/s costs at least 10 ms (a lower
// bound: a loaded machine only makes it longer), and the bytes are charged.
func TestWaitPacesAndCharges(t *testing.T) {
	l := New(100 << 20)
	l.tokens = 0
	l.last = time.Now()
	start := time.Now()
	if err := l.Wait(t.Context(), 1<<20); err != nil {
		t.Fatal(err)
	}
	waited := time.Since(start)
	if waited < 9*time.Millisecond {
		t.Fatalf("1 MiB from an empty 100 MiB/s bucket passed after %v", waited)
	}
	// Whatever the wait (a loaded machine oversleeps), what is left is at
	// most what accrued in it less the 1 MiB paid.
	if accrued := float64(100<<20) * waited.Seconds(); l.tokens > accrued-(1<<20)+1 {
		t.Fatalf("%.0f tokens left after %v (%.0f accrued) and paying for 1 MiB: the bytes were not charged", l.tokens, waited, accrued)
	}
}

// Charge never waits, and a later Wait pays for what it counted: after
// charging a full bucket plus 1 MiB at 100 MiB/s, 1 byte waits >= 10 ms.
func TestChargeIsPaidByLaterWaits(t *testing.T) {
	l := New(100 << 20)
	l.Charge(int(l.burst) + 1<<20)
	if l.tokens > -(1<<20)+1 {
		t.Fatalf("%.0f tokens after charging the whole bucket and 1 MiB more", l.tokens)
	}
	start := time.Now()
	if err := l.Wait(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 9*time.Millisecond {
		t.Fatalf("a byte after a 1 MiB overdraft at 100 MiB/s passed after %v", waited)
	}
	New(0).Charge(1 << 30) // unlimited: nothing to count
}
