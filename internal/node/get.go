package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/wire"
)

// maxGetAnswer caps the chunk bytes in one GetAck so it fits a frame;
// chunks past it are answered StatusRefused and the client asks again.
const maxGetAnswer = wire.MaxFrameSize - 64<<10

func (n *Node) handleGet(s network.Stream) {
	var ids []chunk.ID
	var res []wire.GetResult
	var data []byte // one buffer for the whole answer's chunk bytes
	n.handler(ProtoGet, wire.TypeGet, func(from peer.ID, payload, dst []byte) ([]byte, error) {
		prio, got, err := wire.DecodeGet(payload, ids)
		if err != nil {
			return dst, err
		}
		if err := n.admitRequest(from, len(got)); err != nil {
			return dst, err
		}
		ids = got
		res, data = res[:0], data[:0]
		var ends []int // end offset of each OK chunk in data
		for _, id := range ids {
			if len(data) >= maxGetAnswer {
				res = append(res, wire.GetResult{Status: wire.StatusRefused})
				ends = append(ends, len(data))
				continue
			}
			start := len(data)
			got, err := n.store.Get(id, data[start:])
			st := wire.StatusOK
			switch {
			case errors.Is(err, chunkstore.ErrNotFound):
				st = wire.StatusMissing
			case err != nil:
				st = wire.StatusFailed
				n.log.Error("read chunk to serve", "chunk", id.Short(), "err", err)
			default:
				data = append(data[:start], got...)
				n.m.servedBytes.Add(float64(len(got)))
			}
			res = append(res, wire.GetResult{Status: st})
			ends = append(ends, len(data))
		}
		// Point results into data only now: appends above may have moved it.
		start := 0
		for i := range res {
			if res[i].Status == wire.StatusOK {
				res[i].Data = data[start:ends[i]]
			}
			start = ends[i]
		}
		n.m.servedChunks.WithLabelValues(prioLabel(prio)).Add(float64(len(ids)))
		return wire.AppendGetAck(dst, res), nil
	})(s)
}

func prioLabel(p wire.Priority) string {
	if p == wire.Demand {
		return "demand"
	}
	return "prefetch"
}

// GetStream fetches chunks from one peer over one pipelined stream at one
// priority. Use it from one goroutine at a time.
type GetStream struct {
	n    *Node
	rs   *reqStream
	peer peer.ID
	prio wire.Priority
	res  []wire.GetResult // decode buffer, used only by the reader goroutine
}

// OpenGet opens a get stream to p. Open demand and prefetch streams
// separately: a demand stream never waits behind bulk transfers.
func (n *Node) OpenGet(ctx context.Context, p peer.ID, prio wire.Priority, window int) (*GetStream, error) {
	s, err := n.host.NewStream(ctx, p, ProtoGet)
	if err != nil {
		return nil, fmt.Errorf("open get stream to %s: %w", p, err)
	}
	return &GetStream{n: n, rs: newReqStream(s, max(1, window), n.cfg.RequestTimeout), peer: p, prio: prio}, nil
}

// Peer is the peer this stream fetches from.
func (gs *GetStream) Peer() peer.ID { return gs.peer }

// Get requests ids (at most wire.MaxBatch). done is called exactly once,
// with one result per ID, or with an error (also when Get itself fails). Every OK result has been re-hashed and matches
// its ID; a chunk that did not is reported as StatusBadHash and its bytes
// dropped. Results are valid only during done; ids must not change until
// done is called.
func (gs *GetStream) Get(ctx context.Context, ids []chunk.ID, done func([]wire.GetResult, error)) error {
	return gs.rs.send(ctx, func(dst []byte) []byte { return wire.AppendGet(dst, gs.prio, ids) },
		func(t wire.Type, payload []byte, err error) {
			if err == nil {
				err = expect(t, payload, wire.TypeGetAck)
			}
			if err == nil {
				gs.res, err = wire.DecodeGetAck(payload, gs.res)
			}
			if err == nil && len(gs.res) != len(ids) {
				err = fmt.Errorf("get-ack has %d results for %d ids: %w", len(gs.res), len(ids), wire.ErrMalformed)
			}
			if err != nil {
				done(nil, fmt.Errorf("get from %s: %w", gs.peer, err))
				return
			}
			gs.n.verifyFetched(gs.peer, ids, gs.res)
			done(gs.res, nil)
		})
}

// Close waits for outstanding answers, then closes the stream.
func (gs *GetStream) Close() error { return gs.rs.close() }

// Abort resets the stream; outstanding requests fail.
func (gs *GetStream) Abort() { gs.rs.abort() }

func (n *Node) verifyFetched(from peer.ID, ids []chunk.ID, res []wire.GetResult) {
	for i := range res {
		if res[i].Status != wire.StatusOK {
			continue
		}
		if !chunk.Verify(ids[i], res[i].Data) {
			n.m.badChunks.Inc()
			res[i] = wire.GetResult{Status: wire.StatusBadHash}
			n.offence(from, "served chunk "+ids[i].Short()+" with bytes that do not match its ID; dropped")
			continue
		}
		n.m.fetchedBytes.Add(float64(len(res[i].Data)))
	}
}
