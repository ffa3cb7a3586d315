package eviction

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/wire"
)

// Pusher is one pipelined push stream to one peer.
type Pusher interface {
	// Push writes a batch and returns; done is called exactly once with one
	// status per chunk (valid only during the call) or an error, also when
	// Push itself fails (its error only says to stop using the stream).
	// chunks may be reused after Push returns.
	Push(ctx context.Context, chunks []wire.Chunk, done func([]wire.Status, error)) error
	Close() error
	Abort()
}

// Network opens push streams to peers by ID.
type Network interface {
	// OpenPush opens a push stream to peer for the chunks of h: peer keeps
	// them until h ends.
	OpenPush(ctx context.Context, peer string, h wire.Hold) (Pusher, error)
}

// PutConfig configures Put.
type PutConfig struct {
	Name           string // recorded in the manifest
	ChunkSize      int    // bytes per chunk
	BatchBytes     int    // chunk bytes per push frame
	StreamsPerPeer int    // parallel push streams per target
	QueueBatches   int    // batches queued per target before the reader waits
	// ID names the put at its targets (zero: a random one); only this
	// node may remove it there.
	ID wire.MigrationID
	// Expire ends the put at its targets this long after it was made (0:
	// kept until removed).
	Expire time.Duration
}

// DefaultPutConfig cuts files into 64 KiB chunks and pushes 1 MiB batches
// over two streams per target.
func DefaultPutConfig() PutConfig {
	return PutConfig{ChunkSize: 64 << 10, BatchBytes: 1 << 20, StreamsPerPeer: 2, QueueBatches: 8}
}

// Validate reports the first thing wrong with c.
func (c PutConfig) Validate() error {
	switch {
	case c.ChunkSize <= 0 || c.ChunkSize > wire.MaxChunkSize:
		return fmt.Errorf("chunk size %d: want 1..%d", c.ChunkSize, wire.MaxChunkSize)
	case c.BatchBytes < c.ChunkSize || c.BatchBytes > wire.MaxFrameSize/2:
		return fmt.Errorf("batch size %d: want chunk size..%d", c.BatchBytes, wire.MaxFrameSize/2)
	case c.StreamsPerPeer <= 0 || c.QueueBatches <= 0:
		return errors.New("streams per peer and queue length must be positive")
	case c.Expire < 0 || c.Expire > wire.MaxHoldExpire || c.Expire%time.Second != 0:
		return fmt.Errorf("expiry %s: want whole seconds up to %s", c.Expire, wire.MaxHoldExpire)
	}
	return nil
}

// PutProgress is reported while Put runs.
type PutProgress struct {
	BytesRead  int64 // of the input
	BytesAcked int64 // unique chunk bytes acknowledged by every replica
	Total      int64
}

// PutResult describes a finished Put.
type PutResult struct {
	ID            wire.MigrationID // the put's name at its targets
	Root          chunk.ID
	Size          int64
	Chunks        int64
	ZeroChunks    int64
	DupChunks     int64 // chunks equal to an earlier chunk of the same input
	UniqueBytes   int64 // bytes of distinct non-zero chunks
	ManifestBytes int64
	SentBytes     map[string]int64 // chunk bytes acknowledged, per target
	Duration      time.Duration
}

// ErrRejected means a target refused a chunk (full, bad hash, failed).
var ErrRejected = errors.New("target rejected a chunk")

// Put reads size bytes from r, and pushes every distinct non-zero chunk and
// the manifest to every target. It returns once all of them acknowledged
// everything. progress may be nil; it is called from one goroutine.
func Put(ctx context.Context, net Network, targets []string, r io.ReaderAt, size int64, cfg PutConfig, progress func(PutProgress)) (*PutResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("put: %w", err)
	}
	if len(targets) == 0 {
		return nil, errors.New("put: no targets")
	}
	start := time.Now()
	if cfg.ID == (wire.MigrationID{}) {
		rand.Read(cfg.ID[:])
	}
	sc, err := newScatter(ctx, net, targets, cfg)
	if err != nil {
		return nil, err
	}
	res := &PutResult{ID: cfg.ID, Size: size, SentBytes: map[string]int64{}}
	region := manifest.Region{Name: cfg.Name, Kind: manifest.KindFile, Size: size, ChunkSize: cfg.ChunkSize}
	ids := make([]chunk.ID, 0, region.Chunks())

	// Producer: read, hash, filter, batch. Runs here; the scatter's
	// goroutines drain the batches concurrently.
	perr := func() error {
		seen := make(map[chunk.ID]struct{})
		span := make([]byte, 16*cfg.ChunkSize)
		for off := int64(0); off < size; {
			n := int(min(int64(len(span)), size-off))
			if _, err := r.ReadAt(span[:n], off); err != nil && !(errors.Is(err, io.EOF) && n > 0) {
				return fmt.Errorf("read input at offset %d: %w", off, err)
			}
			for p := 0; p < n; p += cfg.ChunkSize {
				data := span[p:min(n, p+cfg.ChunkSize)]
				res.Chunks++
				if chunk.IsZeroData(data) {
					res.ZeroChunks++
					ids = append(ids, chunk.Zero)
					continue
				}
				id := chunk.Sum(data)
				ids = append(ids, id)
				if _, dup := seen[id]; dup {
					res.DupChunks++
					continue
				}
				seen[id] = struct{}{}
				res.UniqueBytes += int64(len(data))
				if err := sc.add(id, data); err != nil {
					return err
				}
			}
			off += int64(n)
			if progress != nil {
				progress(PutProgress{BytesRead: off, BytesAcked: sc.acked.Load(), Total: size})
			}
		}
		nodes, err := manifest.Build(&region, ids)
		if err != nil {
			return err
		}
		m := manifest.Manifest{Name: cfg.Name, Regions: []manifest.Region{region}}
		root := m.Encode()
		res.Root = chunk.Sum(root)
		nodes = append(nodes, manifest.Node{ID: res.Root, Data: root})
		for _, nd := range nodes {
			res.ManifestBytes += int64(len(nd.Data))
			if err := sc.add(nd.ID, nd.Data); err != nil {
				return err
			}
		}
		return nil
	}()
	if err := sc.finish(perr); err != nil {
		return nil, fmt.Errorf("put: %w", err)
	}
	for t, n := range sc.sent {
		res.SentBytes[t] = n.Load()
	}
	res.Duration = time.Since(start)
	if progress != nil {
		progress(PutProgress{BytesRead: size, BytesAcked: sc.acked.Load(), Total: size})
	}
	return res, nil
}

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
	switch {
	case perr != nil:
		return perr
	case cause != nil && !errors.Is(cause, context.Canceled):
		return cause
	}
	return gerr
}
