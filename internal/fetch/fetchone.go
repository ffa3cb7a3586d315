package fetch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
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

// ErrUnavailable means no holder could provide a chunk.
var ErrUnavailable = errors.New("no holder could provide the chunk")

// fetchOneTimeout bounds each holder's try in fetchOne (a manifest node
// is at most a MiB).
const fetchOneTimeout = 5 * time.Second

// ErrCorrupt means a holder served bytes that do not hash to the chunk ID.
var ErrCorrupt = errors.New("served bytes do not match the chunk ID")

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
