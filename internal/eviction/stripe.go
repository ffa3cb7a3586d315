package eviction

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/seal"
)

// Redundancy is an erasure code over an eviction's distinct chunks
// (--redundancy k+m): stripes of up to Data chunks and Parity parity
// chunks, every shard of a stripe on a target of its own, so that any
// Parity targets may be lost (the destination counts as one). It costs
// Parity/Data more bytes on the source's link, where Parity+1 replicas
// would cost Parity times more.
type Redundancy struct{ Data, Parity int }

// On reports whether an erasure code is set.
func (r Redundancy) On() bool { return r.Parity > 0 }

func (r Redundancy) String() string { return fmt.Sprintf("%d+%d", r.Data, r.Parity) }

// ParseRedundancy parses "k+m".
func ParseRedundancy(s string) (Redundancy, error) {
	a, b, ok := strings.Cut(s, "+")
	k, err1 := strconv.Atoi(a)
	m, err2 := strconv.Atoi(b)
	r := Redundancy{k, m}
	if !ok || err1 != nil || err2 != nil {
		return r, fmt.Errorf("redundancy %q: want k+m, e.g. 4+1", s)
	}
	return r, r.Validate()
}

// Validate reports what is wrong with r.
func (r Redundancy) Validate() error {
	if r.Data < 2 || r.Data > manifest.MaxStripeData || r.Parity < 1 || r.Parity > manifest.MaxStripeParity {
		return fmt.Errorf("redundancy %s: want 2..%d data and 1..%d parity chunks per stripe", r, manifest.MaxStripeData, manifest.MaxStripeParity)
	}
	return nil
}

// stripe is one erasure-coded group: shards are its data chunks, then its
// parity chunks, each to be held by a different target.
type stripe struct {
	shards []*chunkState
	k      int // data shards
	size   int // shard size: the largest data chunk
}

// takenLocked is every target that holds, or is pushing, a shard of s
// other than st: st may go to none of them.
func (s *stripe) takenLocked(st *chunkState) uint32 {
	var m uint32
	for _, o := range s.shards {
		if o != st {
			m |= o.holders | o.pushing
		}
	}
	return m
}

// striper cuts each region's new distinct chunks into stripes as the
// sequencer hands them over. A group is a set of lane batches: lane j
// holds shard j of each of the group's stripes, so a target takes a whole
// lane of a group or nothing of it.
//
//	chunks ─► lane 0 │ lane 1 │ … │ lane k-1 ─(per stripe: Reed-Solomon)─► lane k … lane k+m-1
type striper struct {
	sc  *scheduler
	red Redundancy

	lanes   []*batch // the group being filled: Data data lanes, then Parity parity lanes
	row     []*chunkState
	rows    int
	rowsMax int
	vm, reg int
	pad     [][]byte // shard buffers for the code
}

func newStriper(sc *scheduler, red Redundancy) *striper {
	return &striper{sc: sc, red: red, vm: -1}
}

// add puts a new distinct chunk of region (vm, reg) into the group; it
// returns the lane batches of groups that are complete. The striper is
// the sequencer's: call add and flush with the ledger's lock held.
func (sp *striper) add(vm, reg int, st *chunkState, data []byte) ([]*batch, error) {
	var done []*batch
	if sp.lanes != nil && (vm != sp.vm || reg != sp.reg || sp.rows == sp.rowsMax) {
		var err error
		if done, err = sp.flush(); err != nil {
			return nil, err
		}
	}
	if sp.lanes == nil {
		sp.vm, sp.reg = vm, reg
		sp.rowsMax = max(1, min(sp.sc.e.cfg.BatchBytes/max(1, len(data)), 1024))
		for range sp.red.Data + sp.red.Parity {
			sp.lanes = append(sp.lanes, sp.sc.newBatch())
		}
	}
	sp.lanes[len(sp.row)].add(st, data)
	sp.row = append(sp.row, st)
	if len(sp.row) == sp.red.Data {
		if err := sp.endRow(); err != nil {
			return nil, err
		}
	}
	return done, nil
}

// flush ends the group (the region ended, or the group is full) and
// returns its non-empty lanes.
func (sp *striper) flush() ([]*batch, error) {
	if err := sp.endRow(); err != nil {
		return nil, err
	}
	var out []*batch
	for _, b := range sp.lanes {
		if len(b.items) > 0 {
			out = append(out, b)
		}
	}
	sp.lanes, sp.rows = nil, 0
	return out, nil
}

// endRow codes the current stripe: its parity chunks join the parity
// lanes. A lone chunk needs no code: it is held by Parity+1 targets.
func (sp *striper) endRow() error {
	k := len(sp.row)
	switch k {
	case 0:
		return nil
	case 1:
		sp.row[0].need = uint8(sp.red.Parity + 1)
		sp.row, sp.rows = sp.row[:0], sp.rows+1
		return nil
	}
	data := make([][]byte, k)
	for j := range k {
		b := sp.lanes[j]
		data[j] = b.data[len(b.data)-1]
	}
	parity, err := sp.sc.code.Parity(data, sp.red.Parity, &sp.pad)
	if err != nil {
		return err
	}
	s := &stripe{k: k, size: len(parity[0]), shards: append([]*chunkState(nil), sp.row...)}
	ms := manifest.Stripe{Size: s.size}
	for _, st := range sp.row {
		st.stripe = s
		ms.Data = append(ms.Data, st.id)
	}
	for j, p := range parity {
		st := &chunkState{id: chunk.Sum(p), size: len(p), parity: true, stripe: s}
		s.shards = append(s.shards, st)
		sp.lanes[sp.red.Data+j].add(st, p)
		ms.Parity = append(ms.Parity, st.id)
	}
	sc := sp.sc
	sc.parity = append(sc.parity, s.shards[k:]...)
	v := &sc.e.vms[sp.vm]
	v.stripes = append(v.stripes, ms)
	v.res.ParityChunks += int64(len(parity))
	v.res.ParityBytes += int64(len(parity) * s.size)
	sp.row, sp.rows = sp.row[:0], sp.rows+1
	return nil
}

// reread reads a chunk again from the snapshot, sealed if the eviction
// seals, and checks it is unchanged.
func (sc *scheduler) reread(st *chunkState, buf []byte) ([]byte, error) {
	v := &sc.e.vms[st.first.vm]
	buf, err := readAt(v.Regions[st.first.region], st.first.index, buf)
	if err != nil {
		return buf, err
	}
	id := chunk.Sum(buf)
	if sc.e.cfg.Seal {
		id, _ = seal.Sum(buf)
	}
	if id != st.id {
		return buf, fmt.Errorf("%s %s chunk %d: %w since it was read", v.Name, v.Regions[st.first.region].Name, st.first.index, ErrImageChanged)
	}
	return buf, nil
}

// recomputeParity codes a lost parity shard again from its stripe's data,
// read again from the snapshot.
func (sc *scheduler) recomputeParity(st *chunkState, pad *[][]byte) ([]byte, error) {
	s := st.stripe
	data := make([][]byte, s.k)
	for j, d := range s.shards[:s.k] {
		var err error
		if data[j], err = sc.reread(d, nil); err != nil {
			return nil, err
		}
	}
	parity, err := sc.code.Parity(data, len(s.shards)-s.k, pad)
	if err != nil {
		return nil, err
	}
	for j, p := range parity {
		if s.shards[s.k+j] == st {
			if chunk.Sum(p) != st.id {
				return nil, fmt.Errorf("parity chunk %s coded again differs: %w", st.id.Short(), ErrImageChanged)
			}
			return p, nil
		}
	}
	return nil, fmt.Errorf("parity chunk %s is not in its stripe", st.id.Short())
}

// tooFewForStripesLocked is the error of an erasure-coded eviction left
// with fewer live targets than a stripe has shards: it cannot place them
// (at the start, or once it has lost targets).
func (sc *scheduler) tooFewForStripesLocked() error {
	red := sc.e.cfg.Redundancy
	if !red.On() {
		return nil
	}
	alive := 0
	for _, t := range sc.targets {
		if !t.dead {
			alive++
		}
	}
	if alive < red.Data+red.Parity {
		return fmt.Errorf("evict: redundancy %s needs %d live targets, %d left (give it more than k+m to survive losing one)",
			red, red.Data+red.Parity, alive)
	}
	return nil
}

// stuckAfter is how long an erasure-coded eviction may have shards queued
// and nothing in flight before it counts as stuck.
const stuckAfter = 5 * time.Second

// stuckLocked reports whether queued shards have found no target for
// stuckAfter (every live target left holds another shard of their stripe,
// or is full): the eviction cannot end, so it must fail.
func (sc *scheduler) stuckLocked() bool {
	if !sc.e.cfg.Redundancy.On() || sc.inflight > 0 || len(sc.queue) == 0 || sc.repairing > 0 || !sc.prodDone {
		sc.idleSince = time.Time{}
		return false
	}
	if sc.idleSince.IsZero() {
		sc.idleSince = time.Now()
	}
	return time.Since(sc.idleSince) > stuckAfter
}
