package eviction

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/erasure"
	"github.com/sgrelay/sg/internal/ratelimit"
	"github.com/sgrelay/sg/internal/wire"
)

// destIndex is the destination's target (and holder) index.
const destIndex = 0

// batch is a run of distinct chunks pushed together. Items leave a batch's
// life only once each has Replicas holders; until then the batch goes back
// to the queue after each push, and a target pushes only the items it
// does not hold yet.
type batch struct {
	items    []*chunkState
	data     [][]byte
	buf      []byte
	inflight uint32    // targets pushing it now
	launched time.Time // when the first of them began
}

func (b *batch) fits(n, limit int) bool {
	return len(b.items) == 0 || (len(b.items) < wire.MaxBatch && len(b.buf)+n <= limit)
}

func (b *batch) add(st *chunkState, data []byte) {
	off := len(b.buf)
	b.buf = append(b.buf, data...)
	b.items = append(b.items, st)
	b.data = append(b.data, b.buf[off:len(b.buf):len(b.buf)])
}

// without returns a batch of the items not listed in drop (sharing data).
func (b *batch) without(drop []int) *batch {
	nb := &batch{buf: b.buf}
	skip := map[int]bool{}
	for _, i := range drop {
		skip[i] = true
	}
	for i := range b.items {
		if !skip[i] {
			nb.items = append(nb.items, b.items[i])
			nb.data = append(nb.data, b.data[i])
		}
	}
	return nb
}

type target struct {
	idx  int
	peer string
	bit  uint32
	dest bool
	dead bool
	full bool
	free int64 // capacity estimate left; <0: unknown
	// downlink is the bytes/s it said it can take in (0: not said);
	// empty, that its store held no chunk when asked.
	downlink int64
	empty    bool
	sent     atomic.Int64
	pushes   int // stream workers still running

	// The in-flight window (under led.mu): bytes pushed but not answered
	// are kept to what the target drains in windowTime at its measured
	// rate, so a slow target does not hoard batches a relay could take
	// (and the endgame has little to copy).
	flight     int64
	rate       float64       // acknowledged bytes per second (moving average)
	latency    time.Duration // push to answer (moving average)
	rateBytes  int64         // acknowledged since rateSince
	rateSince  time.Time
	minLatency time.Duration
	// lastProgress is when t last answered, or began to have something
	// in flight; streams are its push streams (reset when it stalls).
	lastProgress time.Time
	streams      []Pusher
	// The liveness check at the end (under led.mu): one is running, and
	// when the last one that answered began; landed is when t last
	// answered a push.
	checking bool
	checked  time.Time
	landed   time.Time
}

// checkedSinceLandingLocked reports whether t answered a liveness check
// begun after it last answered a push.
func (t *target) checkedSinceLandingLocked() bool {
	return !t.checked.IsZero() && !t.checked.Before(t.landed)
}

// stallLimitLocked is how long t may leave pushes unanswered before it
// counts as lost: four times what its in-flight data should take at its
// measured rate and sixteen times its quickest answer, at least two
// seconds. Before it has answered at all: thirty-two times the quickest
// answer of any target (quickest), at least three seconds; thirty
// seconds while no target has answered.
func (t *target) stallLimitLocked(quickest time.Duration) time.Duration {
	if t.minLatency == 0 {
		if quickest == 0 {
			return 30 * time.Second
		}
		return max(3*time.Second, 32*quickest)
	}
	limit := max(2*time.Second, 16*t.minLatency)
	if t.rate > 0 {
		limit = max(limit, 4*time.Duration(float64(t.flight)/t.rate*float64(time.Second)))
	}
	return limit
}

// windowTime is how long a target's in-flight data should take to drain,
// unless its answers take longer (a long path): then twice that.
const windowTime = 100 * time.Millisecond

// windowLocked is how many bytes t may have in flight.
func (sc *scheduler) windowLocked(t *target) int64 {
	span := max(windowTime, 2*t.minLatency)
	return max(int64(2*sc.e.cfg.BatchBytes), int64(t.rate*span.Seconds()))
}

// roomLocked reports whether t may push size more bytes now. A target
// with nothing in flight always may.
func (sc *scheduler) roomLocked(t *target, size int64) bool {
	return t.flight == 0 || t.flight+size <= sc.windowLocked(t)
}

// measureLocked records an answer to a push of size bytes sent at start.
func (t *target) measureLocked(size int64, start, now time.Time) {
	l := now.Sub(start)
	if t.minLatency == 0 || l < t.minLatency {
		t.minLatency = l
	}
	if t.latency == 0 {
		t.latency = l
	} else {
		t.latency = (4*t.latency + l) / 5
	}
	if t.rateSince.IsZero() {
		t.rateSince = start
	}
	t.rateBytes += size
	if d := now.Sub(t.rateSince); d >= 20*time.Millisecond {
		r := float64(t.rateBytes) / d.Seconds()
		if t.rate == 0 {
			t.rate = r
		} else {
			t.rate = 0.7*t.rate + 0.3*r
		}
		t.rateBytes, t.rateSince = 0, now
	}
}

// scheduler hands batches to push streams. Policy:
//
//   - the destination takes any batch it can help with;
//   - a relay takes a batch only when the destination is behind (RelayBacklog
//     batches wait), when the destination already holds the batch (more
//     replicas needed), when the destination cannot take more, or when
//     the producer has finished (no point leaving a relay idle at the end);
//   - a target stops taking once it is dead, full, or out of the capacity
//     it reported.
//
// A target's share thus follows its measured rate: a stream asks for the
// next batch only when its window has room.
type scheduler struct {
	e       *Eviction
	ctx     context.Context
	led     *ledger
	targets []*target
	cond    *sync.Cond // on led.mu

	queue     []*batch
	inflight  int
	flying    map[*batch]bool // batches some target is pushing now
	stopPush  context.CancelFunc
	streams   []Pusher // every push stream, reset once the eviction is done
	prodDone  bool
	finished  bool
	failed    error
	repairing int

	placed func([]placement)
	// placedPush takes a push placement instead (see asPushLocked).
	placedPush func(pushPlacement)
	limiter    *ratelimit.Limiter
	pool       sync.Pool

	uniqueDone     atomic.Int64
	endgame        atomic.Int64 // bytes handed to a second target in the endgame
	alreadyHeld    atomic.Int64
	repaired       atomic.Int64
	manifestPushed atomic.Int64  // manifest bytes pushed, every copy
	unsatisfied    int64         // distinct chunks without Replicas holders (under led.mu)
	parity         []*chunkState // erasure-coded evictions: every parity chunk (under led.mu)
	code           erasure.Code  // erasure-coded evictions: codes stripes (the sequencer's, and repairs')
	idleSince      time.Time     // erasure-coded evictions: since when shards wait with nothing in flight
}

func newScheduler(ctx context.Context, e *Eviction, peers []string) (*scheduler, error) {
	sc := &scheduler{e: e, ctx: ctx, led: &ledger{chunks: map[chunk.ID]*chunkState{}}, flying: map[*batch]bool{}}
	sc.cond = sync.NewCond(&sc.led.mu)
	sc.limiter = ratelimit.New(e.cfg.MaxRate)
	sc.pool.New = func() any { return &batch{buf: make([]byte, 0, e.cfg.BatchBytes)} }
	// Every target is asked its capacity at once: one round trip, not one
	// per target, before the first push.
	var wg sync.WaitGroup
	for i, p := range peers {
		t := &target{idx: i, peer: p, bit: 1 << i, dest: i == destIndex, free: -1}
		sc.targets = append(sc.targets, t)
		wg.Go(func() {
			if c, err := e.cl.Capacity(ctx, p); err == nil {
				t.free, t.downlink, t.empty = c.Free, c.Downlink, c.Chunks == 0
			} else if !t.dest {
				e.log.Warn("intermediate did not report its capacity; not using it", "peer", p, "err", err)
				t.dead = true
			}
		})
	}
	wg.Wait()
	return sc, nil
}

// destMayPull reports whether the destination should fetch from the relays
// while the scatter still runs. Two conditions, from the link rates the
// targets said and the source's uplink (Config):
//
//   - its downlink is more than its even share of the source's uplink
//     (congestion-controlled flows split an uplink evenly): else the
//     pushes fill it, and a pull would only slow them;
//   - the relays together can take in all the source sends: then what a
//     pull takes from the pushes to the destination, the source pushes
//     to the relays, and its uplink stays full.
//
// The destination's downlink then stays busy, and the gather ends about
// when a direct migration would, where it would otherwise fetch the
// relays' half after the scatter.
func (sc *scheduler) destMayPull() bool {
	if sc.e.cfg.Uplink <= 0 || sc.e.cfg.Direct {
		return false
	}
	var in int64
	live := 0
	for _, t := range sc.targets {
		if t.dead {
			continue
		}
		live++
		if t.dest {
			continue
		}
		if t.downlink <= 0 {
			return false
		}
		in += t.downlink
	}
	d := sc.targets[destIndex].downlink
	return live > 1 && in >= sc.e.cfg.Uplink && d*int64(live) > sc.e.cfg.Uplink
}

func (sc *scheduler) newBatch() *batch {
	b := sc.pool.Get().(*batch)
	b.items, b.data, b.buf, b.inflight = b.items[:0], b.data[:0], b.buf[:0], 0
	return b
}

// enqueue adds a new batch; it blocks while the queue is long, so memory
// stays bounded by the queue plus what is in flight.
func (sc *scheduler) enqueue(ctx context.Context, b *batch) error {
	sc.led.mu.Lock()
	defer sc.led.mu.Unlock()
	limit := 4 * max(sc.e.cfg.RelayBacklog, 2) * len(sc.targets)
	for len(sc.queue) >= limit && sc.failed == nil && ctx.Err() == nil {
		sc.cond.Wait()
	}
	if sc.failed != nil {
		return sc.failed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	sc.unsatisfied += int64(len(b.items))
	for _, st := range b.items {
		if bits.OnesCount32(st.holders) >= sc.e.cfg.Replicas {
			sc.unsatisfied-- // already satisfied (e.g. held at the destination)
		}
	}
	sc.queue = append(sc.queue, b)
	sc.cond.Broadcast()
	return nil
}

// producerDone records that no more batches will come.
func (sc *scheduler) producerDone(err error) {
	sc.led.mu.Lock()
	defer sc.led.mu.Unlock()
	sc.prodDone = true
	if err != nil && sc.failed == nil {
		sc.failed = err
	}
	sc.cond.Broadcast()
}

func (sc *scheduler) fail(err error) {
	if sc.failed == nil {
		sc.failed = err
	}
	sc.cond.Broadcast()
}

// needs reports whether st still lacks holders.
func (sc *scheduler) needs(st *chunkState) bool {
	need := sc.e.cfg.Replicas
	if st.need > 0 {
		need = int(st.need)
	}
	return bits.OnesCount32(st.holders) < need
}

// eligible lists the items of b that t should push: those that lack
// holders, that t does not hold, and no other shard of whose stripe t
// holds or is pushing.
func (sc *scheduler) eligible(b *batch, t *target) []int {
	if b.inflight&t.bit != 0 {
		return nil
	}
	var out []int
	for i, st := range b.items {
		if sc.needs(st) && st.holders&t.bit == 0 && (st.stripe == nil || st.stripe.takenLocked(st)&t.bit == 0) {
			out = append(out, i)
		}
	}
	return out
}

func (sc *scheduler) destUsable() bool {
	d := sc.targets[destIndex]
	return !d.dead && !d.full
}

// take blocks until t has a batch to push, or returns nil when t should stop.
func (sc *scheduler) take(t *target) (*batch, []int) {
	sc.led.mu.Lock()
	defer sc.led.mu.Unlock()
	for {
		if sc.failed != nil || sc.finished || t.dead || t.full {
			return nil, nil
		}
		relayMayTake := sc.prodDone || len(sc.queue) >= sc.e.cfg.RelayBacklog || !sc.destUsable()
		var queued int64 // for landsInTimeLocked, once nothing more comes
		if sc.prodDone {
			for _, q := range sc.queue {
				for _, d := range q.data {
					queued += int64(len(d))
				}
			}
		}
		for qi, b := range sc.queue {
			items := sc.eligible(b, t)
			if len(items) == 0 {
				continue
			}
			if !t.dest && !relayMayTake && !sc.heldByDest(b) {
				continue
			}
			if sc.prodDone && !sc.landsInTimeLocked(t, b, items, queued) {
				continue
			}
			size, ok := sc.claimLocked(t, b, items)
			if !ok {
				continue
			}
			sc.queue = append(sc.queue[:qi], sc.queue[qi+1:]...)
			sc.launchLocked(t, b, items, size)
			sc.cond.Broadcast() // the queue shrank: the producer may go on
			return b, items
		}
		if b, items := sc.endgameLocked(t); b != nil {
			return b, items
		}
		sc.cond.Wait()
	}
}

// claimLocked reserves room at t for items of b and returns their size;
// false if t's reported capacity or its in-flight window cannot take them.
func (sc *scheduler) claimLocked(t *target, b *batch, items []int) (int64, bool) {
	size := int64(0)
	for _, i := range items {
		size += int64(len(b.data[i]))
	}
	if (t.free >= 0 && size > t.free) || !sc.roomLocked(t, size) {
		return 0, false
	}
	if t.free >= 0 {
		t.free -= size
	}
	return size, true
}

func (sc *scheduler) launchLocked(t *target, b *batch, items []int, size int64) {
	if t.flight == 0 {
		t.lastProgress = time.Now()
	}
	if b.inflight == 0 {
		b.launched = time.Now()
	}
	for _, i := range items {
		b.items[i].pushing |= t.bit
	}
	b.inflight |= t.bit
	sc.inflight++
	sc.flying[b] = true
	t.flight += size
}

// landedLocked records that t's push of size bytes (items) of b ended, one
// way or another.
func (sc *scheduler) landedLocked(t *target, b *batch, items []int, size int64) {
	for _, i := range items {
		b.items[i].pushing &^= t.bit
	}
	b.inflight &^= t.bit
	sc.inflight--
	t.flight -= size
	if b.inflight == 0 {
		delete(sc.flying, b)
	}
}

// doneLocked reports whether every chunk has its holders: nothing left to
// read, repair or push that is still needed. Pushes still in flight then
// only add copies; they are abandoned.
func (sc *scheduler) doneLocked() bool {
	if !sc.prodDone || sc.repairing > 0 || sc.unsatisfied > 0 {
		return false
	}
	for _, b := range sc.queue {
		if sc.countNeeds(b) > 0 {
			return false
		}
	}
	for b := range sc.flying {
		if sc.countNeeds(b) > 0 {
			return false
		}
	}
	return true
}

func (sc *scheduler) heldByDest(b *batch) bool {
	for _, st := range b.items {
		if st.holders&(1<<destIndex) == 0 {
			return false
		}
	}
	return true
}

// acked records that target idx holds items of b and returns the
// placements that became due. Call with led.mu held.
func (sc *scheduler) ackedLocked(b *batch, items []int, idx int) []placement {
	var out []placement
	bit := uint32(1) << idx
	for _, i := range items {
		st := b.items[i]
		st.holders |= bit
		if !st.satisfied && !sc.needs(st) {
			st.satisfied = true
			if !st.parity {
				sc.uniqueDone.Add(int64(st.size))
			}
			for _, at := range st.waiting {
				out = append(out, placement{at: at, id: st.id, holders: st.holders})
			}
			st.waiting = nil
		}
	}
	return out
}

// withoutSatisfied returns b less the items that already have their holders.
func (sc *scheduler) withoutSatisfied(b *batch) *batch {
	sc.led.mu.Lock()
	defer sc.led.mu.Unlock()
	var drop []int
	for i, st := range b.items {
		if !sc.needs(st) {
			drop = append(drop, i)
		}
	}
	if len(drop) == 0 {
		return b
	}
	return b.without(drop)
}

// acked is ackedLocked for callers outside the lock (the have filter).
// Placements are handed to the placer under the lock: once the scheduler
// has declared completion, none can still be on their way.
func (sc *scheduler) acked(b *batch, items []int, idx int) {
	sc.led.mu.Lock()
	defer sc.led.mu.Unlock()
	if due := sc.ackedLocked(b, items, idx); len(due) > 0 {
		sc.placed(due)
	}
}

// run starts every target's push streams and returns when every chunk is
// satisfied (and every relay still holding chunks is alive), or on failure.
func (sc *scheduler) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	pushCtx, stopPush := context.WithCancel(gctx)
	defer stopPush()
	sc.stopPush = stopPush
	for _, t := range sc.targets {
		if t.dead {
			continue
		}
		streams := sc.e.cfg.RelayStreams
		if t.dest {
			streams = sc.e.cfg.DestStreams
		}
		for range streams {
			ps, err := sc.e.cl.OpenPush(gctx, t.peer, sc.e.hold())
			if err != nil {
				if t.dest {
					return fmt.Errorf("push to destination %s: %w", t.peer, err)
				}
				sc.e.log.Warn("cannot push to intermediate; not using it", "peer", t.peer, "err", err)
				sc.led.mu.Lock()
				sc.loseTargetLocked(t)
				sc.led.mu.Unlock()
				break
			}
			sc.led.mu.Lock()
			t.pushes++
			sc.streams = append(sc.streams, ps)
			t.streams = append(t.streams, ps)
			sc.led.mu.Unlock()
			g.Go(func() error { return sc.pushLoop(pushCtx, t, ps) })
		}
	}
	g.Go(func() error { return sc.watch(gctx) })
	g.Go(func() error { sc.watchStalls(pushCtx); return nil })

	stop := context.AfterFunc(gctx, func() {
		sc.led.mu.Lock()
		sc.fail(context.Cause(gctx))
		sc.led.mu.Unlock()
	})
	defer stop()
	err := g.Wait()
	sc.led.mu.Lock()
	defer sc.led.mu.Unlock()
	if sc.failed != nil && !sc.finished {
		return sc.failed
	}
	return err
}

// livenessTimeout bounds the final check that each relay holding chunks
// is still there.
const livenessTimeout = 2 * time.Second

// watch waits for completion; before declaring it, it checks that every
// relay holding chunks still answers, repairing what a lost one held. A
// relay is checked as soon as it has drained (nothing left to read or
// queue, nothing of its own in flight), beside the others' last batches;
// one that takes more after its check is checked again. (Skipping the
// check for a relay that had just answered its last push saved a round
// trip when it was the last to finish, but left a relay lost right then
// unrepaired: TestRedundancyRelayLostAtTheEnd.)
func (sc *scheduler) watch(ctx context.Context) error {
	var checks sync.WaitGroup // owned here: each ends within livenessTimeout
	defer checks.Wait()
	sc.led.mu.Lock()
	for {
		if sc.failed != nil {
			err := sc.failed
			sc.led.mu.Unlock()
			return err
		}
		done := sc.doneLocked()
		drained := sc.prodDone && len(sc.queue) == 0 && sc.repairing == 0
		pending := false
		for _, t := range sc.targets {
			switch {
			case t.dest || t.dead || t.sent.Load() == 0:
			case t.checking:
				pending = true
			case t.checkedSinceLandingLocked() && (t.flight == 0 || done):
			// (At the end, what it still has in flight is spare.)
			case done || (drained && t.flight == 0):
				sc.checkLocked(ctx, t, &checks)
				pending = true
			}
		}
		if done && !pending {
			break
		}
		sc.cond.Wait()
	}
	sc.finished = true
	sc.cond.Broadcast()
	streams := sc.streams
	sc.led.mu.Unlock()
	// What is still in flight is a spare copy: reset the streams rather
	// than wait for a slow target to drain them (a write blocked on flow
	// control does not see a context).
	sc.stopPush()
	for _, ps := range streams {
		ps.Abort()
	}
	return nil
}

// checkLocked asks t whether it is still there, in a goroutine counted in
// checks. Every relay at once: a live one answers in a round trip; a
// crashed one never does, and its connection may take seconds to be
// declared dead: do not wait for that.
func (sc *scheduler) checkLocked(ctx context.Context, t *target, checks *sync.WaitGroup) {
	t.checking = true
	started := time.Now()
	checks.Go(func() {
		cctx, cancel := context.WithTimeout(ctx, livenessTimeout)
		_, err := sc.e.cl.Capacity(cctx, t.peer)
		cancel()
		sc.led.mu.Lock()
		defer sc.led.mu.Unlock()
		t.checking = false
		if err != nil {
			sc.e.log.Warn("intermediate lost before the end of the eviction; repairing", "peer", t.peer, "err", err)
			sc.loseTargetLocked(t)
		} else {
			t.checked = started
		}
		sc.cond.Broadcast()
	})
}

// watchStalls gives up on a relay that stops answering (a host that
// crashed or was cut off keeps its connection until liveness checks fail,
// seconds later): its streams are reset and what it held is repaired.
func (sc *scheduler) watchStalls(ctx context.Context) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		sc.led.mu.Lock()
		if sc.finished || sc.failed != nil {
			sc.led.mu.Unlock()
			return
		}
		if sc.stuckLocked() {
			sc.fail(fmt.Errorf("redundancy %s: shards cannot be placed: every live target with room holds another shard of their stripe", sc.e.cfg.Redundancy))
			sc.led.mu.Unlock()
			return
		}
		var quickest time.Duration
		for _, t := range sc.targets {
			if t.minLatency > 0 && (quickest == 0 || t.minLatency < quickest) {
				quickest = t.minLatency
			}
		}
		var reset []Pusher
		for _, t := range sc.targets {
			if t.dest || t.dead || t.flight == 0 {
				continue
			}
			if wait := time.Since(t.lastProgress); wait > t.stallLimitLocked(quickest) {
				sc.targetFailedLocked(t, fmt.Errorf("no answer for %v", wait.Round(time.Millisecond)))
				reset = append(reset, t.streams...)
			}
		}
		sc.led.mu.Unlock()
		for _, ps := range reset {
			ps.Abort()
		}
	}
}

// pushLoop pushes batches to t on one stream until there are none left.
func (sc *scheduler) pushLoop(ctx context.Context, t *target, ps Pusher) error {
	defer func() {
		sc.led.mu.Lock()
		t.pushes--
		sc.cond.Broadcast()
		sc.led.mu.Unlock()
	}()
	var chunks []wire.Chunk
	for {
		b, items := sc.take(t)
		if b == nil {
			break
		}
		chunks = chunks[:0]
		size := 0
		for _, i := range items {
			chunks = append(chunks, wire.Chunk{ID: b.items[i].id, Data: b.data[i]})
			size += len(b.data[i])
		}
		if err := sc.limiter.Wait(ctx, size); err != nil {
			sc.requeue(t, b, items, int64(size), err)
			break
		}
		// onAck runs exactly once per Push, also when Push fails: it
		// requeues the batch then, so here we only stop using the stream.
		start := time.Now()
		if err := ps.Push(ctx, chunks, func(st []wire.Status, err error) { sc.onAck(t, b, items, int64(size), start, st, err) }); err != nil {
			break
		}
	}
	sc.led.mu.Lock()
	finished := sc.finished
	sc.led.mu.Unlock()
	if finished {
		ps.Abort() // do not wait for spare copies
	} else if err := ps.Close(); err != nil {
		ps.Abort()
	}
	return nil
}

// requeue returns a batch whose push failed and gives up on the target.
func (sc *scheduler) requeue(t *target, b *batch, items []int, size int64, err error) {
	sc.led.mu.Lock()
	defer sc.led.mu.Unlock()
	sc.landedLocked(t, b, items, size)
	if b.inflight == 0 {
		sc.queue = append([]*batch{b}, sc.queue...)
	}
	sc.targetFailedLocked(t, err)
}

func (sc *scheduler) targetFailedLocked(t *target, err error) {
	if t.dead || sc.finished {
		return
	}
	if t.dest {
		sc.fail(fmt.Errorf("destination %s failed: %w", t.peer, err))
		return
	}
	sc.e.log.Warn("intermediate failed; its chunks go elsewhere", "peer", t.peer, "err", err)
	sc.loseTargetLocked(t)
}

// loseTargetLocked marks t dead and takes back every chunk it held: those
// left without enough holders are read again and re-queued.
func (sc *scheduler) loseTargetLocked(t *target) {
	if t.dead {
		return
	}
	t.dead = true
	var lost []*chunkState
	lose := func(st *chunkState) {
		if st.holders&t.bit == 0 {
			return
		}
		wasOK := !sc.needs(st)
		st.holders &^= t.bit
		if wasOK && sc.needs(st) {
			st.satisfied = false
			lost = append(lost, st)
			if st.parity {
				return
			}
			// Placed again once repaired, so the destination learns the
			// new holder (at the chunk's first position: it keeps holders
			// per chunk, not per position).
			st.waiting = append(st.waiting, st.first)
			sc.uniqueDone.Add(-int64(st.size))
		}
	}
	for _, st := range sc.led.chunks {
		lose(st)
	}
	for _, st := range sc.parity {
		lose(st)
	}
	if err := sc.tooFewForStripesLocked(); err != nil {
		sc.fail(err)
	}
	if len(lost) > 0 {
		sc.unsatisfied += int64(len(lost))
		sc.repairing++
		go sc.repair(lost) // owned by the scheduler: watch waits for repairing == 0
	}
	if !sc.anyAliveLocked() {
		sc.fail(errors.New("no target left to push to"))
	}
	sc.cond.Broadcast()
}

func (sc *scheduler) anyAliveLocked() bool {
	for _, t := range sc.targets {
		if !t.dead && !t.full {
			return true
		}
	}
	return false
}

// repair re-reads lost chunks from the snapshot and queues them again.
func (sc *scheduler) repair(lost []*chunkState) {
	defer func() {
		sc.led.mu.Lock()
		sc.repairing--
		sc.cond.Broadcast()
		sc.led.mu.Unlock()
	}()
	b := sc.newBatch()
	var buf []byte
	flush := func() bool {
		if len(b.items) == 0 {
			return true
		}
		sc.led.mu.Lock()
		sc.queue = append([]*batch{b}, sc.queue...)
		sc.cond.Broadcast()
		sc.led.mu.Unlock()
		b = sc.newBatch()
		return true
	}
	var pad [][]byte
	for _, st := range lost {
		var err error
		if st.parity {
			var p []byte
			if p, err = sc.recomputeParity(st, &pad); err == nil {
				buf = append(buf[:0], p...)
			}
		} else {
			buf, err = sc.reread(st, buf)
		}
		if err != nil {
			sc.led.mu.Lock()
			sc.fail(fmt.Errorf("repair after a lost intermediate: %w", err))
			sc.led.mu.Unlock()
			return
		}
		if !b.fits(len(buf), sc.e.cfg.BatchBytes) {
			flush()
		}
		b.add(st, buf)
		sc.repaired.Add(1)
	}
	flush()
}

// onAck handles a target's answer to one push.
func (sc *scheduler) onAck(t *target, b *batch, items []int, size int64, start time.Time, st []wire.Status, err error) {
	sc.led.mu.Lock()
	sc.landedLocked(t, b, items, size)
	if err == nil {
		t.measureLocked(size, start, time.Now())
		t.lastProgress, t.landed = time.Now(), time.Now()
	}
	var due []placement
	if err == nil && t.dead {
		// Declared dead (by another stream's failure or a missed liveness
		// check) before this ack arrived: its copies are written off, so
		// this one must not count either.
		err = errors.New("acknowledged by a target already given up")
	}
	if err != nil {
		if b.inflight == 0 { // else the other pusher requeues it if need be
			sc.queue = append([]*batch{b}, sc.queue...)
		}
		sc.targetFailedLocked(t, err)
	} else {
		var ok []int
		var bytes int64
		for k, s := range st {
			switch s {
			case wire.StatusOK:
				ok = append(ok, items[k])
				bytes += int64(len(b.data[items[k]]))
			case wire.StatusFull:
				if !t.full {
					sc.e.log.Info("target is full; sending it no more", "peer", t.peer)
				}
				t.full = true
			default:
				sc.e.log.Warn("target rejected a chunk", "peer", t.peer, "chunk", b.items[items[k]].id.Short(), "status", s)
			}
		}
		t.sent.Add(bytes)
		before := sc.countNeeds(b)
		due = sc.ackedLocked(b, ok, t.idx)
		if len(ok) == len(items) {
			if pp, rest, whole := sc.asPushLocked(b, ok, due); whole {
				sc.placedPush(pp) // under the lock: see acked
				due = rest
			}
		}
		after := sc.countNeeds(b)
		sc.unsatisfied -= int64(before - after)
		if after > 0 && b.inflight == 0 {
			sc.queue = append([]*batch{b}, sc.queue...)
		} else if after == 0 && b.inflight == 0 {
			sc.pool.Put(b)
		}
		if t.full && !sc.anyAliveLocked() {
			sc.fail(errors.New("every target is full"))
		}
	}
	if len(due) > 0 {
		sc.placed(due) // under the lock: see acked
	}
	sc.cond.Broadcast()
	sc.led.mu.Unlock()
}

func (sc *scheduler) countNeeds(b *batch) int {
	n := 0
	for _, st := range b.items {
		if sc.needs(st) {
			n++
		}
	}
	return n
}

func (sc *scheduler) sentSnapshot() map[string]int64 {
	out := map[string]int64{}
	for _, t := range sc.targets {
		out[t.peer] = t.sent.Load()
	}
	return out
}
