package eviction

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/seal"
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
	Hashers        int    // hashing goroutines (0: one per CPU)
	// Seal encrypts every chunk at rest, as an eviction's Seal does: the
	// targets hold ciphertext only, and the manifest opens with
	// PutResult.Secret.
	Seal bool
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
	case c.Hashers < 0:
		return fmt.Errorf("hashers %d: want 0 (one per CPU) or more", c.Hashers)
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
	Secret        seal.Secret // sealed puts: opens the manifest
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

// ErrNoTargets fails a put given no target to push to.
var ErrNoTargets = errors.New("no targets")

// ErrFileChanged fails a put whose input ended before its size while it
// was read (a file truncated meanwhile): nothing of it is committed.
var ErrFileChanged = errors.New("file changed while it was read")

// putSpanChunks is how many chunks a put reads and hashes as one unit.
const putSpanChunks = 16

// Put reads size bytes from r through the producer (hashed in parallel,
// zeros and duplicates dropped) and pushes every distinct non-zero chunk,
// then the manifest, to every target. It returns once all of them
// acknowledged everything. An input that fails to read (or shrinks)
// fails the put before any manifest is sent, so no CID names what was.
// progress may be nil; it is called from one goroutine at a time.
func Put(ctx context.Context, net Network, targets []string, r io.ReaderAt, size int64, cfg PutConfig, progress func(PutProgress)) (*PutResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("put: %w", err)
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("put: %w", ErrNoTargets)
	}
	start := time.Now()
	if cfg.ID == (wire.MigrationID{}) {
		rand.Read(cfg.ID[:])
	}
	hashers := cfg.Hashers
	if hashers == 0 {
		hashers = runtime.GOMAXPROCS(0)
	}
	sc, err := newScatter(ctx, net, targets, cfg)
	if err != nil {
		return nil, err
	}
	res := &PutResult{ID: cfg.ID, Size: size, SentBytes: map[string]int64{}}
	im := newImage(cfg.Name, []Region{{Name: cfg.Name, Kind: manifest.KindFile, Size: size, ChunkSize: cfg.ChunkSize, Data: r}}, cfg.Seal)
	pr := newProducer([]*image{im}, putSpanChunks*cfg.ChunkSize, hashers, cfg.Seal, ErrFileChanged)
	report := func() {
		if progress != nil {
			progress(PutProgress{BytesRead: pr.read.Load(), BytesAcked: sc.acked.Load(), Total: size})
		}
	}
	perr := pr.run(sc.ctx, &putSink{sc: sc, added: map[chunk.ID]struct{}{}, report: report})
	if perr == nil {
		if cfg.Seal {
			rand.Read(res.Secret[:])
		}
		perr = sc.addManifest(im, cfg, res)
	}
	if err := sc.finish(perr); err != nil {
		return nil, fmt.Errorf("put: %w", err)
	}
	for t, n := range sc.sent {
		res.SentBytes[t] = n.Load()
	}
	res.Chunks, res.ZeroChunks, res.DupChunks, res.UniqueBytes = im.chunks, im.zeroChunks, im.dupWithin, pr.uniqueBytes
	res.Duration = time.Since(start)
	report()
	return res, nil
}

// putSink is a put's end of the producer: every new distinct chunk goes
// to every target.
type putSink struct {
	sc     *scatter
	added  map[chunk.ID]struct{}
	report func()
}

func (s *putSink) begin() {}
func (s *putSink) end()   { s.report() }

func (s *putSink) seen(_ pos, id chunk.ID) (int, bool) {
	_, dup := s.added[id]
	return 0, dup
}

func (s *putSink) add(_ context.Context, _ pos, id chunk.ID, data []byte) error {
	s.added[id] = struct{}{}
	return s.sc.add(id, data)
}

func (s *putSink) flush(context.Context) error { return nil }

// addManifest builds the put's manifest (sealed with res.Secret if the
// put seals) and queues its nodes behind the data, root last.
func (sc *scatter) addManifest(im *image, cfg PutConfig, res *PutResult) error {
	region := manifest.Region{Name: cfg.Name, Kind: manifest.KindFile, Size: res.Size, ChunkSize: cfg.ChunkSize}
	var nodes []manifest.Node
	var err error
	if cfg.Seal {
		nodes, err = manifest.BuildSealed(&region, 0, im.ids[0], im.plains[0], res.Secret)
	} else {
		nodes, err = manifest.Build(&region, im.ids[0])
	}
	if err != nil {
		return err
	}
	m := manifest.Manifest{Name: cfg.Name, Sealed: cfg.Seal, Regions: []manifest.Region{region}}
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
}
