package fetch

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/seal"
)

// Rebuilding: in an erasure-coded migration (evict --redundancy k+m), a
// chunk that no holder can provide once the source is gone is decoded
// from any k other shards of its stripe, fetched from whoever holds them
// (parity chunks are not placed: every peer of the migration is asked),
// and verified against its ID like any fetched chunk.

// maxRebuilds bounds the stripes decoded at once (each fetches its other
// shards at once, and keeps the first k); a stripe that cannot be decoded
// is tried rebuildAttempts times (a holder may only be congested).
const (
	maxRebuilds     = 8
	rebuildAttempts = 3
)

// learnStripesLocked indexes a resolved manifest's stripes.
func (g *Gatherer) learnStripesLocked(stripes []manifest.Stripe) {
	if len(stripes) == 0 {
		return
	}
	g.stripes = stripes
	g.stripeOf = make(map[chunk.ID]int, len(stripes)*len(stripes[0].Data))
	for i, s := range stripes {
		for _, id := range s.Data {
			g.stripeOf[id] = i
		}
	}
}

// rebuildLocked starts decoding id from its stripe; false if it is in
// none. A chunk is rebuilt once at a time.
func (g *Gatherer) rebuildLocked(id chunk.ID) bool {
	si, ok := g.stripeOf[id]
	if !ok {
		return false
	}
	if g.rebuilding[id] {
		return true
	}
	if g.rebuilding == nil {
		g.rebuilding = map[chunk.ID]bool{}
	}
	g.rebuilding[id] = true
	stripe := g.stripes[si]
	g.spawn(func() {
		var err error
		for attempt := 1; ; attempt++ {
			if err = g.rebuild(id, stripe); err == nil || attempt == rebuildAttempts {
				break
			}
			g.log.Debug("stripe not decoded; trying again", "chunk", id.Short(), "attempt", attempt, "err", err)
			select {
			case <-time.After(time.Duration(attempt) * time.Second):
			case <-g.stopCtx.Done():
				return
			}
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		delete(g.rebuilding, id)
		if err != nil {
			g.failLocked(fmt.Errorf("chunk %s: no holder could provide it, and its stripe could not be decoded: %w: %w", id, err, ErrGatherFailed))
		}
	})
	return true
}

// rebuild fetches enough shards of s to decode id, and delivers id (and
// any other data chunk of s still missing here).
func (g *Gatherer) rebuild(id chunk.ID, s manifest.Stripe) error {
	select {
	case g.rebuildSlots <- struct{}{}:
		defer func() { <-g.rebuildSlots }()
	case <-g.done:
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stop := context.AfterFunc(g.stopCtx, cancel)
	defer stop()

	k := len(s.Data)
	all := append(slices.Clone(s.Data), s.Parity...)
	g.mu.Lock()
	var peers, gone []Holder // holders given up on are asked last
	for _, p := range g.in.Peers() {
		rtt, _ := g.net.RTT(p)
		if g.holder(p).goneLocked() {
			gone = append(gone, Holder{Peer: p, RTT: rtt})
		} else {
			peers = append(peers, Holder{Peer: p, RTT: rtt})
		}
	}
	g.mu.Unlock()
	// Every other shard is asked for at once; the first k answers decode.
	type answer struct {
		i    int
		data []byte
		err  error
	}
	answers := make(chan answer, len(all))
	fctx, stopFetches := context.WithCancel(ctx)
	defer stopFetches()
	asked := 0
	for i, sid := range all {
		if sid == id {
			continue
		}
		asked++
		g.spawn(func() {
			// Known holders first, then everyone (parity is not placed).
			known := g.in.Holders(sid)
			hs := slices.Clone(peers)
			slices.SortStableFunc(hs, func(a, b Holder) int {
				return boolRank(!slices.Contains(known, a.Peer)) - boolRank(!slices.Contains(known, b.Peer))
			})
			data, err := g.readShardHere(sid)
			if err != nil {
				data, err = fetchOne(fctx, g.net, append(hs, gone...), g.store, sid)
			}
			answers <- answer{i, data, err}
		})
	}
	shards := make([][]byte, len(all))
	got := 0
	for ; asked > 0 && got < k; asked-- {
		a := <-answers
		if a.err != nil {
			g.log.Debug("stripe shard unavailable", "chunk", all[a.i].Short(), "err", a.err)
			continue
		}
		shards[a.i] = a.data
		got++
	}
	stopFetches() // the rest are not needed
	if got < k {
		return fmt.Errorf("only %d of the %d shards needed to decode its stripe are held", got, k)
	}
	if err := g.code.Decode(shards, k, s.Size); err != nil {
		return err
	}
	for j, did := range s.Data {
		g.mu.Lock()
		pos := g.positions[did]
		missing := len(pos) > 0 && !g.present[pos[0].Region][pos[0].Index]
		g.mu.Unlock()
		if !missing && did != id {
			continue
		}
		if len(pos) == 0 {
			return fmt.Errorf("stripe lists chunk %s, which the manifest does not", did.Short())
		}
		r := g.in.Regions[pos[0].Region]
		n := min(int64(r.ChunkSize), int64(r.Size)-int64(pos[0].Index)*int64(r.ChunkSize))
		data := shards[j][:n]
		if !chunk.Verify(did, data) {
			return fmt.Errorf("chunk %s decoded from its stripe does not match its ID", did.Short())
		}
		g.mu.Lock()
		g.st.RebuiltChunks++
		g.mu.Unlock()
		g.keep(did, data)
		if err := g.deliver(did, data, nil); err != nil {
			return err
		}
	}
	return nil
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// readShardHere reads a data shard from our own files if it is already
// there (pushed here, copied to the files and gone from the store).
func (g *Gatherer) readShardHere(id chunk.ID) ([]byte, error) {
	g.mu.Lock()
	_, data := g.stripeOf[id]
	sealed := g.plains != nil
	g.mu.Unlock()
	if !data {
		return nil, ErrUnavailable
	}
	b, err := g.readPresent(id, nil) // the plaintext, if sealed
	if err != nil {
		return nil, err
	}
	if sealed {
		g.mu.Lock()
		plain := g.plains[id]
		g.mu.Unlock()
		seal.Chunk(b, b, plain) // sealing is its own inverse
		if !chunk.Verify(id, b) {
			return nil, ErrUnavailable
		}
	}
	return b, nil
}
