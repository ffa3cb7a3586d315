package eviction

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/wire"
)

// putBatch is a run of chunks sent to every target; it is recycled once every
// target has acknowledged it.
type putBatch struct {
	chunks  []wire.Chunk
	buf     []byte
	pending atomic.Int32 // targets yet to acknowledge
	bytes   int64
}

// scatter fans batches out to every target's streams.
type scatter struct {
	cfg    PutConfig
	ctx    context.Context
	cancel context.CancelCauseFunc
	g      *errgroup.Group
	queues map[string]chan *putBatch
	sent   map[string]*atomic.Int64
	acked  atomic.Int64
	cur    *putBatch
	pool   sync.Pool
}

func newScatter(ctx context.Context, net Network, targets []string, cfg PutConfig) (*scatter, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	g, gctx := errgroup.WithContext(ctx)
	sc := &scatter{cfg: cfg, ctx: gctx, cancel: cancel, g: g,
		queues: map[string]chan *putBatch{}, sent: map[string]*atomic.Int64{}}
	sc.pool.New = func() any { return &putBatch{buf: make([]byte, 0, cfg.BatchBytes)} }
	for _, t := range targets {
		if _, dup := sc.queues[t]; dup {
			cancel(nil)
			return nil, fmt.Errorf("put: target %s listed twice", t)
		}
		q := make(chan *putBatch, cfg.QueueBatches)
		sc.queues[t], sc.sent[t] = q, new(atomic.Int64)
		for range cfg.StreamsPerPeer {
			ps, err := net.OpenPush(gctx, t, wire.Hold{Kind: wire.HoldPut, IDs: []wire.MigrationID{cfg.ID}, Expire: cfg.Expire})
			if err != nil {
				cancel(nil)
				g.Wait()
				return nil, fmt.Errorf("put: %w", err)
			}
			g.Go(func() error { return sc.drain(t, ps, q) })
		}
	}
	sc.cur = sc.newBatch()
	return sc, nil
}

func (sc *scatter) newBatch() *putBatch {
	b := sc.pool.Get().(*putBatch)
	b.chunks, b.buf, b.bytes = b.chunks[:0], b.buf[:0], 0
	return b
}

// add copies one chunk into the current batch, sending it when full.
func (sc *scatter) add(id chunk.ID, data []byte) error {
	if len(sc.cur.buf)+len(data) > sc.cfg.BatchBytes || len(sc.cur.chunks) == wire.MaxBatch {
		if err := sc.send(); err != nil {
			return err
		}
	}
	b := sc.cur
	off := len(b.buf)
	b.buf = append(b.buf, data...)
	b.chunks = append(b.chunks, wire.Chunk{ID: id, Data: b.buf[off:len(b.buf):len(b.buf)]})
	b.bytes += int64(len(data))
	return nil
}

func (sc *scatter) send() error {
	b := sc.cur
	if len(b.chunks) == 0 {
		return nil
	}
	sc.cur = sc.newBatch()
	b.pending.Store(int32(len(sc.queues)))
	for _, q := range sc.queues {
		select {
		case q <- b:
		case <-sc.ctx.Done():
			return context.Cause(sc.ctx)
		}
	}
	return nil
}

// drain pushes batches from q on one stream until q is closed.
func (sc *scatter) drain(target string, ps Pusher, q <-chan *putBatch) error {
	for b := range q {
		err := ps.Push(sc.ctx, b.chunks, func(st []wire.Status, err error) {
			if err == nil {
				for i, s := range st {
					if s != wire.StatusOK {
						err = fmt.Errorf("%s: chunk %s: %s: %w", target, b.chunks[i].ID.Short(), s, ErrRejected)
						break
					}
				}
			}
			if err != nil {
				sc.cancel(err)
				return
			}
			sc.sent[target].Add(b.bytes)
			if b.pending.Add(-1) == 0 {
				sc.acked.Add(b.bytes)
				sc.pool.Put(b)
			}
		})
		if err != nil {
			ps.Abort()
			return fmt.Errorf("push to %s: %w", target, err)
		}
	}
	if err := ps.Close(); err != nil {
		return fmt.Errorf("push to %s: %w", target, err)
	}
	return nil
}

// finish flushes the last batch, closes the queues and waits for every
// acknowledgement. perr is the producer's error, if any.
func (sc *scatter) finish(perr error) error {
	if perr == nil {
		perr = sc.send()
	}
	if perr != nil {
		sc.cancel(perr)
	}
	for _, q := range sc.queues {
		close(q)
	}
	gerr := sc.g.Wait()
	cause := context.Cause(sc.ctx)
	sc.cancel(nil)
	failed := cause != nil && !errors.Is(cause, context.Canceled)
	switch {
	case perr != nil && failed && errors.Is(perr, context.Canceled):
		return cause // the producer stopped because a target failed
	case perr != nil:
		return perr
	case failed:
		return cause
	}
	return gerr
}
