package fetch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/wire"
)

// Getter is one pipelined get stream to one peer.
type Getter interface {
	// Get requests ids; done is called exactly once with one result per ID
	// (OK results already re-hashed against their ID) or an error, also when
	// Get itself fails. Results are valid only during done; ids must not
	// change until then.
	Get(ctx context.Context, ids []chunk.ID, done func([]wire.GetResult, error)) error
	Close() error
	Abort()
}

// Network opens get streams to peers by ID.
type Network interface {
	OpenGet(ctx context.Context, peer string, prio wire.Priority, window int) (Getter, error)
}

// Holder is a peer that may hold the chunks, with its RTT (0 if unknown).
type Holder struct {
	Peer string
	RTT  time.Duration
}

// LocalStore is this node's own store: chunks in it are never fetched.
type LocalStore interface {
	Get(id chunk.ID, dst []byte) ([]byte, error)
}

// Output is where a fetched file is written.
type Output interface {
	io.WriterAt
	io.ReaderAt
	Truncate(size int64) error
}

// Config configures Get.
type Config struct {
	BatchChunks int // chunks per Get request
	Window      int // requests in flight per holder
	MaxHolders  int // holders fetched from at once
}

// DefaultConfig asks for 16 chunks per request, 4 requests in flight per
// holder, from up to 3 holders.
func DefaultConfig() Config { return Config{BatchChunks: 16, Window: 4, MaxHolders: 3} }

// Progress is reported while Get runs.
type Progress struct {
	BytesDone int64 // bytes of the output written or known zero
	Total     int64
}

// Result describes a finished Get.
type Result struct {
	Size         int64
	Chunks       int64
	ZeroChunks   int64
	LocalChunks  int64            // distinct chunks found in the local store
	Fetched      map[string]int64 // chunk bytes fetched, per holder
	Retried      int64            // chunks asked again of another holder
	Duration     time.Duration
	ManifestName string
}

// ErrUnavailable means no holder could provide a chunk.
var ErrUnavailable = errors.New("no holder could provide the chunk")

// fetchOneTimeout bounds each holder's try in fetchOne (a manifest node
// is at most a MiB).
const fetchOneTimeout = 5 * time.Second

// ErrCorrupt means a holder served bytes that do not hash to the chunk ID.
var ErrCorrupt = errors.New("served bytes do not match the chunk ID")

// Get fetches the single-region manifest rooted at root into out.
func Get(ctx context.Context, net Network, holders []Holder, local LocalStore, root chunk.ID, out Output, cfg Config, progress func(Progress)) (*Result, error) {
	if len(holders) == 0 {
		return nil, errors.New("get: no holders")
	}
	start := time.Now()
	holders = slices.Clone(holders)
	slices.SortStableFunc(holders, func(a, b Holder) int { return cmp.Compare(rttKey(a.RTT), rttKey(b.RTT)) })
	if len(holders) > cfg.MaxHolders {
		holders = holders[:cfg.MaxHolders]
	}

	// Resolve the manifest: root, then blocks.
	holders = slices.Clone(holders) // fetchOne reorders it
	rootData, err := fetchOne(ctx, net, holders, local, root)
	if err != nil {
		return nil, fmt.Errorf("get manifest root %s: %w", root, err)
	}
	m, err := manifest.Decode(rootData)
	if err != nil {
		return nil, fmt.Errorf("get: %s is not a manifest root: %w", root, err)
	}
	if m.Sealed {
		return nil, fmt.Errorf("get: manifest %s is sealed (an eviction encrypted at rest): gather it with its secret instead", root)
	}
	if len(m.Regions) != 1 {
		return nil, fmt.Errorf("get: manifest %s has %d regions; sgctl get takes a single file", root, len(m.Regions))
	}
	reg := m.Regions[0]
	var ids []chunk.ID
	for _, b := range reg.Blocks {
		data, err := fetchOne(ctx, net, holders, local, b)
		if err != nil {
			return nil, fmt.Errorf("get manifest block %s: %w", b, err)
		}
		if ids, err = manifest.DecodeBlock(data, ids); err != nil {
			return nil, fmt.Errorf("get manifest block %s: %w", b, err)
		}
	}
	if int64(len(ids)) != reg.Chunks() {
		return nil, fmt.Errorf("get: manifest lists %d chunks for %d bytes: %w", len(ids), reg.Size, manifest.ErrMalformed)
	}

	res := &Result{Size: reg.Size, Chunks: int64(len(ids)), Fetched: map[string]int64{}, ManifestName: m.Name}
	if err := out.Truncate(reg.Size); err != nil { // zero chunks stay holes
		return nil, fmt.Errorf("get: size output: %w", err)
	}
	w := &writer{out: out, cs: int64(reg.ChunkSize), size: reg.Size, offsets: map[chunk.ID][]int64{}}
	var order []chunk.ID
	for i, id := range ids {
		if id.IsZero() {
			res.ZeroChunks++
			w.done += min(int64(reg.ChunkSize), reg.Size-int64(i)*int64(reg.ChunkSize))
			continue
		}
		if _, ok := w.offsets[id]; !ok {
			order = append(order, id)
		}
		w.offsets[id] = append(w.offsets[id], int64(i))
	}
	var todo []chunk.ID
	var buf []byte
	for _, id := range order {
		if buf, err = local.Get(id, buf); err == nil && chunk.Verify(id, buf) {
			if err := w.write(id, buf); err != nil {
				return nil, err
			}
			res.LocalChunks++
			continue
		}
		todo = append(todo, id)
	}

	if err := fetchAll(ctx, net, holders, todo, w, res, cfg, progress); err != nil {
		return nil, err
	}
	if err := verifyOutput(out, reg, ids); err != nil {
		return nil, err
	}
	res.Duration = time.Since(start)
	if progress != nil {
		progress(Progress{BytesDone: reg.Size, Total: reg.Size})
	}
	return res, nil
}

// rttKey orders measured RTTs ascending and unmeasured (0) ones last.
func rttKey(d time.Duration) time.Duration {
	if d == 0 {
		return math.MaxInt64
	}
	return d
}

// writer puts a chunk's bytes at every offset it appears at.
type writer struct {
	out     Output
	cs      int64
	size    int64
	mu      sync.Mutex
	offsets map[chunk.ID][]int64
	done    int64
}

func (w *writer) write(id chunk.ID, data []byte) error {
	w.mu.Lock()
	idx := w.offsets[id]
	w.mu.Unlock()
	for _, i := range idx {
		off := i * w.cs
		want := min(w.cs, w.size-off)
		if int64(len(data)) != want {
			return fmt.Errorf("chunk %s is %d bytes, position %d needs %d: %w", id.Short(), len(data), i, want, manifest.ErrMalformed)
		}
		if _, err := w.out.WriteAt(data, off); err != nil {
			return fmt.Errorf("write output at %d: %w", off, err)
		}
	}
	w.mu.Lock()
	w.done += int64(len(data)) * int64(len(idx))
	w.mu.Unlock()
	return nil
}

func (w *writer) progress() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.done
}

// fetchOne gets a single chunk, locally or from the holders: the first is
// asked at once, the next when an answer fails or takes longer than
// fetchHedgeAfter (a crashed holder keeps its connection for seconds), and
// the first good answer wins. It reorders holders for the next call: the
// one that answered first, those that failed last.
func fetchOne(ctx context.Context, net Network, holders []Holder, local LocalStore, id chunk.ID) ([]byte, error) {
	if data, err := local.Get(id, nil); err == nil && chunk.Verify(id, data) {
		return data, nil
	}
	if len(holders) == 0 {
		return nil, fmt.Errorf("%w: no holder to ask", ErrUnavailable)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		i    int
		data []byte
		err  error
	}
	answers := make(chan answer, len(holders)) // never blocks a sender
	next, pending := 0, 0
	ask := func() {
		i := next
		next++
		pending++
		go func() { // waited for below: every started ask is received
			data, err := fetchFrom(ctx, net, holders[i].Peer, id)
			answers <- answer{i, data, err}
		}()
	}
	hedge := time.NewTimer(fetchHedgeAfter)
	defer hedge.Stop()
	ask()
	var errs []error
	failed := map[int]bool{}
	for pending > 0 {
		select {
		case a := <-answers:
			pending--
			if a.err != nil {
				errs, failed[a.i] = append(errs, a.err), true
				if next < len(holders) {
					ask()
				}
				continue
			}
			cancel()
			for ; pending > 0; pending-- {
				<-answers
			}
			reorder(holders, a.i, failed)
			// Keep what we had to fetch (a manifest node, usually): the
			// next reader of this manifest here finds it locally.
			if st, ok := local.(interface{ Put(chunk.ID, []byte) error }); ok {
				_ = st.Put(id, a.data) // a full store only costs a refetch
			}
			return a.data, nil
		case <-hedge.C:
			if next < len(holders) {
				ask()
				hedge.Reset(fetchHedgeAfter)
			}
		}
	}
	return nil, fmt.Errorf("%w: %w", ErrUnavailable, errors.Join(errs...))
}

// fetchHedgeAfter is how long fetchOne waits on a holder before asking the
// next one as well.
const fetchHedgeAfter = 500 * time.Millisecond

// reorder puts holders[won] first and the failed ones last, keeping the
// order of the rest.
func reorder(holders []Holder, won int, failed map[int]bool) {
	var good, bad []Holder
	for i, h := range holders {
		switch {
		case i == won:
		case failed[i]:
			bad = append(bad, h)
		default:
			good = append(good, h)
		}
	}
	w := holders[won]
	copy(holders, append(append([]Holder{w}, good...), bad...))
}

// fetchFrom asks one holder for one chunk, for a bounded while: a crashed
// holder keeps its connection until liveness checks fail, seconds later,
// and the next holder may have it.
func fetchFrom(ctx context.Context, net Network, peer string, id chunk.ID) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchOneTimeout)
	defer cancel()
	g, err := net.OpenGet(ctx, peer, wire.Demand, 1)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, g.Abort) // Close waits for the answer
	defer stop()
	var data []byte
	var gerr error
	if err := g.Get(ctx, []chunk.ID{id}, func(res []wire.GetResult, err error) {
		switch {
		case err != nil:
			gerr = err
		case res[0].Status != wire.StatusOK:
			gerr = fmt.Errorf("%s: %s", peer, res[0].Status)
		default:
			data = append([]byte(nil), res[0].Data...)
		}
	}); err != nil {
		g.Abort()
		return nil, err
	}
	if err := g.Close(); err != nil && gerr == nil {
		gerr = err
	}
	if gerr == nil && !chunk.Verify(id, data) {
		gerr = fmt.Errorf("%s: %w", peer, ErrCorrupt)
	}
	return data, gerr
}

// work is the queue shared by the holder workers. A chunk that one holder
// cannot provide is requeued with that holder marked as tried; it fails
// when every live holder has tried it.
type work struct {
	mu      sync.Mutex
	cond    *sync.Cond
	queue   []chunk.ID
	tried   map[chunk.ID]map[string]bool
	alive   map[string]bool
	pending int // chunks not yet written
	failed  error
}

// take returns up to n queued chunks that peer has not tried, waiting while
// there are none but others are still in flight. nil means stop.
func (q *work) take(peer string, n int) []chunk.ID {
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		if q.failed != nil || q.pending == 0 {
			return nil
		}
		var out []chunk.ID
		rest := q.queue[:0]
		for _, id := range q.queue {
			if len(out) < n && !q.tried[id][peer] {
				out = append(out, id)
			} else {
				rest = append(rest, id)
			}
		}
		q.queue = rest
		if len(out) > 0 {
			return out
		}
		q.cond.Wait()
	}
}

func (q *work) doneOne() {
	q.mu.Lock()
	q.pending--
	q.mu.Unlock()
	q.cond.Broadcast()
}

// retry puts id back for another holder.
func (q *work) retry(id chunk.ID, peer string, why error) {
	q.mu.Lock()
	defer q.cond.Broadcast()
	defer q.mu.Unlock()
	if q.tried[id] == nil {
		q.tried[id] = map[string]bool{}
	}
	q.tried[id][peer] = true
	q.queue = append(q.queue, id)
	q.checkLocked(why)
}

// checkLocked fails the fetch if some queued chunk has been tried by every
// live holder.
func (q *work) checkLocked(why error) {
	if q.failed != nil {
		return
	}
	for _, id := range q.queue {
		left := false
		for p := range q.alive {
			if !q.tried[id][p] {
				left = true
				break
			}
		}
		if !left {
			q.failed = fmt.Errorf("chunk %s: %w (last error: %v)", id, ErrUnavailable, why)
			return
		}
	}
}

// holderGone records that peer can provide nothing more.
func (q *work) holderGone(peer string, why error) {
	q.mu.Lock()
	defer q.cond.Broadcast()
	defer q.mu.Unlock()
	delete(q.alive, peer)
	if len(q.alive) == 0 && q.pending > 0 && q.failed == nil {
		q.failed = fmt.Errorf("every holder failed: %w (last error: %v)", ErrUnavailable, why)
		return
	}
	q.checkLocked(why)
}

func (q *work) fail(err error) {
	q.mu.Lock()
	if q.failed == nil {
		q.failed = err
	}
	q.mu.Unlock()
	q.cond.Broadcast()
}

func fetchAll(ctx context.Context, net Network, holders []Holder, todo []chunk.ID, w *writer, res *Result, cfg Config, progress func(Progress)) error {
	if len(todo) == 0 {
		return nil
	}
	q := &work{queue: todo, tried: map[chunk.ID]map[string]bool{}, alive: map[string]bool{}, pending: len(todo)}
	for _, h := range holders {
		q.alive[h.Peer] = true
	}
	q.cond = sync.NewCond(&q.mu)
	var fmu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	// The caller's context, not gctx: Wait cancels gctx when the workers
	// are done, and a failure from that would race with the result.
	stop := context.AfterFunc(ctx, func() { q.fail(context.Cause(ctx)) })
	defer stop()
	for _, h := range holders {
		g.Go(func() error {
			gs, err := net.OpenGet(gctx, h.Peer, wire.Prefetch, cfg.Window)
			if err != nil {
				// This holder is unreachable: its share goes to the others.
				q.holderGone(h.Peer, err)
				return nil
			}
			for {
				batch := q.take(h.Peer, cfg.BatchChunks)
				if batch == nil {
					break
				}
				err := gs.Get(gctx, batch, func(rs []wire.GetResult, err error) {
					for i, id := range batch {
						if err != nil {
							q.retry(id, h.Peer, err)
							continue
						}
						if rs[i].Status != wire.StatusOK {
							q.retry(id, h.Peer, fmt.Errorf("%s: %s", h.Peer, rs[i].Status))
							continue
						}
						if werr := w.write(id, rs[i].Data); werr != nil {
							q.fail(werr)
							return
						}
						fmu.Lock()
						res.Fetched[h.Peer] += int64(len(rs[i].Data))
						fmu.Unlock()
						q.doneOne()
					}
					if progress != nil {
						progress(Progress{BytesDone: w.progress(), Total: w.size})
					}
				})
				if err != nil {
					// The callback has already requeued the batch.
					gs.Abort()
					q.holderGone(h.Peer, err)
					return nil
				}
			}
			if err := gs.Close(); err != nil {
				q.holderGone(h.Peer, err)
			}
			return nil
		})
	}
	g.Wait()
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, t := range q.tried {
		res.Retried += int64(len(t))
	}
	if q.failed != nil {
		return fmt.Errorf("get: %w", q.failed)
	}
	if q.pending != 0 {
		return fmt.Errorf("get: %d chunks left unfetched: %w", q.pending, ErrUnavailable)
	}
	return nil
}

// verifyOutput re-reads the written output and checks every chunk against
// the manifest, so a write the disk garbled is caught here, not by the VM.
func verifyOutput(out Output, reg manifest.Region, ids []chunk.ID) error {
	buf := make([]byte, reg.ChunkSize)
	for i, id := range ids {
		off := int64(i) * int64(reg.ChunkSize)
		n := int(min(int64(reg.ChunkSize), reg.Size-off))
		if _, err := out.ReadAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("verify output at %d: %w", off, err)
		}
		ok := chunk.Verify(id, buf[:n])
		if id.IsZero() {
			ok = chunk.IsZeroData(buf[:n])
		}
		if !ok {
			return fmt.Errorf("verify output: chunk %d at offset %d does not match the manifest", i, off)
		}
	}
	return nil
}
