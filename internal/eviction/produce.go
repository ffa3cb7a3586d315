package eviction

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/seal"
)

// pos is one chunk position: image (VM), region, chunk index.
type pos struct {
	vm, region uint16
	index      uint64
}

// image is one input of the producer: a VM's regions, or a put's file.
// The producer fills its IDs and counts; read them once it has returned.
type image struct {
	name    string
	regions []Region
	ids     [][]chunk.ID // per region, per position: the manifest entries
	plains  [][]chunk.ID // sealed: the plain IDs at the same positions

	chunks, zeroChunks int64
	dupWithin          int64 // equal to an earlier chunk of the same image
	dupAcross          int64 // first seen in another image
}

func newImage(name string, regions []Region, sealed bool) *image {
	im := &image{name: name, regions: regions}
	for _, r := range regions {
		n := (r.Size + int64(r.ChunkSize) - 1) / int64(r.ChunkSize)
		im.ids = append(im.ids, make([]chunk.ID, n))
		if sealed {
			im.plains = append(im.plains, make([]chunk.ID, n))
		}
	}
	return im
}

// sink takes what the producer finds, from one goroutine, span by span:
// it owns the duplicate filter's index (what it was handed before), so
// that an eviction keeps one entry per distinct chunk, not two.
type sink interface {
	// begin and end bracket the calls for one span (an eviction holds
	// its ledger's lock in between).
	begin()
	end()
	// seen reports whether id was added before, and by which image; if
	// so, at is another position of it.
	seen(at pos, id chunk.ID) (firstImage int, dup bool)
	// add takes a new distinct non-zero chunk (sealed: its ciphertext,
	// named by it); data is valid only during the call.
	add(ctx context.Context, at pos, id chunk.ID, data []byte) error
	// flush follows the last chunk.
	flush(ctx context.Context) error
}

// span is a run of chunks of one region, read and hashed as a unit.
type span struct {
	vm, region int
	first      uint64 // index of the first chunk
	chunkSize  int
	buf        []byte
	ids        []chunk.ID
	plains     []chunk.ID // sealed: the plain IDs (buf then holds ciphertext)
}

// producer reads every region of its images, hashes (and seals) on a
// pool of goroutines, drops zero and duplicate chunks, and hands the new
// distinct ones to its sink. It is the one read → hash → filter path of
// both evictions and puts.
//
//	reader ─spans─► hashers (×N) ─spans─► filter (zeros, duplicates) ─► sink
//
// Memory is bounded: 4N+1 spans exist at most.
type producer struct {
	images    []*image
	spanBytes int
	hashers   int
	seal      bool
	// changed is what a short read wraps: the input shrank while it was
	// read (ErrImageChanged for an eviction).
	changed error

	read atomic.Int64 // bytes read so far
	pool sync.Pool

	// Counted by the filter only; read after run returns.
	uniqueChunks, uniqueBytes int64
}

func newProducer(images []*image, spanBytes, hashers int, sealed bool, changed error) *producer {
	p := &producer{images: images, spanBytes: spanBytes, hashers: hashers, seal: sealed, changed: changed}
	p.pool.New = func() any { return &span{buf: make([]byte, 0, spanBytes)} }
	return p
}

// run produces everything into sk and returns once sk has flushed, or
// on the first error.
func (p *producer) run(ctx context.Context, sk sink) error {
	g, gctx := errgroup.WithContext(ctx)
	ctx, stop := context.WithCancelCause(gctx)
	defer stop(nil)
	toHash := make(chan *span, 2*p.hashers)
	toFilter := make(chan *span, 2*p.hashers)

	g.Go(func() error {
		err := p.readAll(ctx, toHash)
		if err != nil {
			stop(err) // before the close: the filter must not flush a short input
		}
		close(toHash)
		return err
	})
	var hw sync.WaitGroup
	for range p.hashers {
		hw.Add(1)
		g.Go(func() error {
			defer hw.Done()
			for s := range toHash {
				hashSpan(s, p.seal)
				select {
				case toFilter <- s:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		})
	}
	g.Go(func() error { hw.Wait(); close(toFilter); return nil })
	g.Go(func() error {
		for s := range toFilter {
			if err := p.filter(ctx, s, sk); err != nil {
				return err
			}
			p.pool.Put(s)
		}
		if err := ctx.Err(); err != nil {
			return err // the channel closed because the reader failed
		}
		return sk.flush(ctx)
	})
	return g.Wait()
}

// readAll reads every region of every image in spans.
func (p *producer) readAll(ctx context.Context, out chan<- *span) error {
	for vi, im := range p.images {
		for ri, r := range im.regions {
			where := im.name + " " + r.Name
			if im.name == r.Name { // a put's file
				where = r.Name
			}
			per := max(1, p.spanBytes/r.ChunkSize) * r.ChunkSize
			for off := int64(0); off < r.Size; off += int64(per) {
				s := p.pool.Get().(*span)
				n := int(min(int64(per), r.Size-off))
				s.vm, s.region, s.first, s.chunkSize = vi, ri, uint64(off/int64(r.ChunkSize)), r.ChunkSize
				s.buf = slices.Grow(s.buf[:0], n)[:n] // pooled: no allocation per span
				got, err := r.Data.ReadAt(s.buf, off)
				if err != nil && !(errors.Is(err, io.EOF) && got == n) {
					if got < n && (err == nil || errors.Is(err, io.EOF)) {
						// The pooled buffer's tail would be stale bytes:
						// never hash and send them.
						return fmt.Errorf("%s: %w: %d bytes at %d, it ends after %d (truncated while it was read?)",
							where, p.changed, n, off, off+int64(got))
					}
					return fmt.Errorf("read %s at %d: %w", where, off, err)
				}
				p.read.Add(int64(n))
				select {
				case out <- s:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
	}
	return nil
}

// hashSpan fills s.ids: chunk.Zero for zero chunks, else the hash. Zero
// detection runs first: it costs a few percent of hashing. With sealed,
// each non-zero chunk is sealed in place and named by its ciphertext, and
// s.plains gets the plaintexts' IDs.
func hashSpan(s *span, sealed bool) {
	s.ids, s.plains = s.ids[:0], s.plains[:0]
	for o := 0; o < len(s.buf); o += s.chunkSize {
		c := s.buf[o:min(len(s.buf), o+s.chunkSize)]
		switch {
		case chunk.IsZeroData(c):
			s.ids = append(s.ids, chunk.Zero)
			if sealed {
				s.plains = append(s.plains, chunk.Zero)
			}
		case sealed:
			id, plain := seal.Sum(c)
			s.ids, s.plains = append(s.ids, id), append(s.plains, plain)
		default:
			s.ids = append(s.ids, chunk.Sum(c))
		}
	}
}

// filter records every position of s for the manifests, counts zeros and
// duplicates, and adds each new distinct chunk to sk.
func (p *producer) filter(ctx context.Context, s *span, sk sink) error {
	im := p.images[s.vm]
	sk.begin()
	defer sk.end()
	for i, id := range s.ids {
		at := pos{vm: uint16(s.vm), region: uint16(s.region), index: s.first + uint64(i)}
		im.ids[s.region][at.index] = id
		if im.plains != nil {
			im.plains[s.region][at.index] = s.plains[i]
		}
		im.chunks++
		if id.IsZero() {
			im.zeroChunks++
			continue
		}
		if first, dup := sk.seen(at, id); dup {
			if first == s.vm {
				im.dupWithin++
			} else {
				im.dupAcross++
			}
			continue
		}
		data := s.buf[i*s.chunkSize : min(len(s.buf), (i+1)*s.chunkSize)]
		p.uniqueChunks++
		p.uniqueBytes += int64(len(data))
		if err := sk.add(ctx, at, id, data); err != nil {
			return err
		}
	}
	return nil
}
