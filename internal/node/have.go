package node

import (
	"context"
	"fmt"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/wire"
)

func (n *Node) handleHave(s network.Stream) {
	var ids []chunk.ID
	var held []bool
	n.handler(ProtoHave, wire.TypeHave, func(from peer.ID, payload, dst []byte) ([]byte, error) {
		var err error
		if ids, err = wire.DecodeIDs(payload, ids); err != nil {
			return dst, err
		}
		if err := n.admitRequest(from, len(ids)); err != nil {
			return dst, err
		}
		held = held[:0]
		for _, id := range ids {
			held = append(held, n.store.Has(id))
		}
		return wire.AppendHaveAck(dst, held), nil
	})(s)
}

// Have asks p which of ids it holds, in batches of wire.MaxBatch on one stream.
func (n *Node) Have(ctx context.Context, p peer.ID, ids []chunk.ID) ([]bool, error) {
	out := make([]bool, 0, len(ids))
	for len(ids) > 0 {
		batch := ids[:min(len(ids), wire.MaxBatch)]
		ids = ids[len(batch):]
		err := n.call(ctx, p, ProtoHave, func(dst []byte) []byte { return wire.AppendHave(dst, batch) },
			wire.TypeHaveAck, func(payload []byte) error {
				held, err := wire.DecodeHaveAck(payload, nil)
				if err == nil && len(held) != len(batch) {
					err = fmt.Errorf("have-ack has %d answers for %d ids: %w", len(held), len(batch), wire.ErrMalformed)
				}
				out = append(out, held...)
				return err
			})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (n *Node) handleInfo(s network.Stream) {
	n.handler(ProtoInfo, wire.TypeInfo, func(_ peer.ID, payload, dst []byte) ([]byte, error) {
		if len(payload) != 0 {
			return dst, fmt.Errorf("info request with %d payload bytes: %w", len(payload), wire.ErrMalformed)
		}
		return wire.AppendInfoAck(dst, n.LocalInfo()), nil
	})(s)
}

// LocalInfo is what this node tells peers about its capacity and load.
func (n *Node) LocalInfo() wire.Info {
	in := wire.Info{Zone: n.cfg.Zone, Load: uint32(max(0, n.load.Load())), Downlink: uint64(n.cfg.Downlink)}
	if r := n.cfg.IngestRate; r > 0 && (in.Downlink == 0 || uint64(r) < in.Downlink) {
		in.Downlink = uint64(r)
	}
	in.ChunksKnown = true
	for _, t := range n.store.TierStats() {
		in.Chunks += uint64(max(0, t.Chunks))
		switch t.Name {
		case "memory":
			in.MemFree = uint64(t.Free())
		case "disk":
			in.DiskFree = uint64(t.Free())
		}
	}
	return in
}

// Info asks p for its capacity, load and zone.
func (n *Node) Info(ctx context.Context, p peer.ID) (wire.Info, error) {
	var in wire.Info
	err := n.call(ctx, p, ProtoInfo, wire.AppendInfo, wire.TypeInfoAck, func(payload []byte) error {
		var err error
		in, err = wire.DecodeInfoAck(payload)
		return err
	})
	return in, err
}
