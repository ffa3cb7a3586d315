package eviction

import (
	"math/bits"
	"time"
)

// endgameLocked hands an idle target, once nothing is left to read or
// queue, a batch another target is still pushing: the last batches of a
// slow target would otherwise hold the source for as long as they take to
// drain. The first holders to acknowledge satisfy the chunks; at most one
// spare copy is in flight per batch, and only where it should land first
// (spareHelpsLocked): when the targets are as fast as each other, the
// source's own uplink is what they share, and a copy would only take
// from it.
//
// An erasure-coded eviction has no endgame: a spare copy would put a
// second target in its stripe, and a shard lost later could then find no
// target left that holds no other shard of it.
func (sc *scheduler) endgameLocked(t *target) (*batch, []int) {
	if sc.e.cfg.NoEndgame || sc.e.cfg.Redundancy.On() || !sc.prodDone || len(sc.queue) > 0 {
		return nil, nil
	}
	for b := range sc.flying {
		if b.inflight&t.bit != 0 || bits.OnesCount32(b.inflight) > sc.e.cfg.Replicas {
			continue
		}
		items := sc.eligible(b, t)
		if len(items) == 0 || !sc.spareHelpsLocked(b, t, items) {
			continue
		}
		size, ok := sc.claimLocked(t, b, items)
		if !ok {
			continue
		}
		sc.launchLocked(t, b, items, size)
		sc.endgame.Add(size)
		return b, items
	}
	return nil, nil
}

// spareHelpsLocked reports whether t, pushing a spare copy of items of b,
// should land it well before the targets pushing b now. Either such a
// target is late, b having been in flight over twice its usual answer time
// (it slowed down, or is failing), or t is more than twice as fast and b
// should still take the target more than twice as long as the copy at t
// (remainingLocked).
// A target not measured yet takes no spares; one that has not answered
// enough to be measured gets a copy once it has been waited on for twice
// as long as the copy should take.
func (sc *scheduler) spareHelpsLocked(b *batch, t *target, items []int) bool {
	if t.rate <= 0 {
		return false
	}
	var size int64
	for _, i := range items {
		size += int64(len(b.data[i]))
	}
	mine := time.Duration((float64(t.flight+size)/t.rate)*float64(time.Second)) + t.minLatency
	since := time.Since(b.launched)
	for _, o := range sc.targets {
		if b.inflight&o.bit == 0 {
			continue
		}
		switch {
		case o.rate <= 0 || o.latency == 0:
			if time.Since(o.lastProgress) < 2*mine {
				return false
			}
		case since > 2*o.latency && since > 2*mine:
			// Late: copy.
		case 2*o.rate >= t.rate || sc.remainingLocked(o, b) < 2*mine:
			return false
		}
	}
	return true
}

// remainingLocked estimates how long o should still take to answer b: its
// data in flight launched no later than b (what it answers first), over
// its rate. (What is left of o's usual answer time was used before: that
// average lags, and went negative for a target that slowed down, a capped
// intake, so the source waited on it.)
func (sc *scheduler) remainingLocked(o *target, b *batch) time.Duration {
	var ahead int64
	for c := range sc.flying {
		if c.inflight&o.bit != 0 && !c.launched.After(b.launched) {
			ahead += int64(len(c.buf))
		}
	}
	return time.Duration(float64(ahead) / o.rate * float64(time.Second))
}

// landsInTimeLocked reports whether t, taking items of b once nothing more
// will be queued, lands them before another live target could have landed
// everything it has in flight and everything queued. Else t leaves b to
// it: a slow target keeps a long answer time's worth in flight, and what
// it takes at the end only lands after the others are done, holding the
// source. (Its downlink stays busy all the same with what it has in
// flight; it fetches the rest from the relays after.) When t lands b is
// taken from its data in flight and b over its rate, not from its usual
// answer time: that average lags, and at the end it and the others' drain
// time are both about a window, so the choice was a coin flip, and one
// batch too many at a 200 Mbit/s destination cost 10 ms in one run of
// two. Erasure-coded evictions take no part: a shard may go only to
// certain targets.
// queued is the chunk bytes of the queue.
func (sc *scheduler) landsInTimeLocked(t *target, b *batch, items []int, queued int64) bool {
	// An idle target always takes: were every target to leave a batch
	// to another, none would push it.
	if sc.e.cfg.NoEndgame || sc.e.cfg.Redundancy.On() || t.rate <= 0 || t.flight == 0 {
		return true
	}
	var size int64
	for _, i := range items {
		size += int64(len(b.data[i]))
	}
	mine := float64(t.flight+size)/t.rate + t.minLatency.Seconds()
	for _, o := range sc.targets {
		if o == t || o.dead || o.full || o.rate <= 0 || len(sc.eligible(b, o)) == 0 {
			continue
		}
		if float64(o.flight+queued)/o.rate < mine {
			return false
		}
	}
	return true
}
