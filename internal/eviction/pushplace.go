package eviction

import (
	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/wire"
)

// pushPlacement places one acknowledged push of one VM's chunks by the
// push's digest (wire.PushPlacement): the destination asks the holder for
// the IDs, so the source's link carries 32 bytes for the push, not 32 a
// chunk.
type pushPlacement struct {
	vm int
	pp wire.PushPlacement
}

// asPushLocked turns the placements an ack of items of b made due into a
// push placement for the chunks' first positions, and returns the rest
// (further positions of the same chunks) as placements. ok is false, and
// due is to be sent as it is, unless the whole push became placed by this
// ack, for one unsealed VM, with one copy of each chunk and no parity: a
// destination then finds each ID at the one holder that answered the push.
// Call with led.mu held.
func (sc *scheduler) asPushLocked(b *batch, items []int, due []placement) (pushPlacement, []placement, bool) {
	if sc.e.cfg.Replicas > 1 || sc.e.cfg.Redundancy.Parity > 0 || len(due) < len(items) {
		return pushPlacement{}, nil, false
	}
	out := pushPlacement{vm: int(due[0].at.vm), pp: wire.PushPlacement{Holders: due[0].holders}}
	if sc.e.vms[out.vm].plains != nil {
		return pushPlacement{}, nil, false
	}
	ids := make([]chunk.ID, 0, len(items))
	var rest []placement
	j := 0
	for _, i := range items {
		st := b.items[i]
		// due holds, item by item, each chunk's positions.
		if j == len(due) || due[j].id != st.id || st.parity {
			return pushPlacement{}, nil, false
		}
		first := true
		for ; j < len(due) && due[j].id == st.id; j++ {
			d := due[j]
			if int(d.at.vm) != out.vm || d.holders != out.pp.Holders {
				return pushPlacement{}, nil, false
			}
			if first {
				out.pp.Runs = wire.AppendRuns(out.pp.Runs, d.at.region, d.at.index)
				first = false
			} else {
				rest = append(rest, d)
			}
		}
		ids = append(ids, st.id)
	}
	if j != len(due) {
		return pushPlacement{}, nil, false
	}
	out.pp.Digest = wire.IDsDigest(ids)
	return out, rest, true
}
