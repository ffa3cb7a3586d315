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
// should land it well before the targets pushing b now: t must be more
// than twice as fast as the fastest of them (measured), and their data in
// flight must take more than twice as long to drain as the copy at t.
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
	mine := float64(t.flight+size)/t.rate + t.minLatency.Seconds()
	for _, o := range sc.targets {
		if b.inflight&o.bit == 0 {
			continue
		}
		if o.rate <= 0 {
			if time.Since(o.lastProgress).Seconds() < 2*mine {
				return false
			}
			continue
		}
		if 2*o.rate >= t.rate || float64(o.flight)/o.rate < 2*mine {
			return false
		}
	}
	return true
}
