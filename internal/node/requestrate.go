package node

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/sgrelay/sg/internal/wire"
)

// ErrRequestFlood refuses a request from a peer that keeps asking beyond
// its request rate.
var ErrRequestFlood = errors.New("request rate exceeded")

// Flood rules. A request over its peer's rate waits for it (the stream
// limits bound how many requests can wait, hence how long). A peer whose
// every request has had to wait for floodAfter has kept the rate
// saturated: no honest node asks that much for that long (the default
// rate is twice a 40 Gbit/s migration's need), so the request is refused
// as an offence. maxRequestWait refuses a request at once if waiting
// would take longer than that (a very low configured rate).
const (
	floodAfter     = 5 * time.Second
	maxRequestWait = 2 * time.Second
)

// requestRates holds one token bucket per peer over the chunk IDs named
// in have and get requests (Config.RequestRate). Entries live as long as
// the peer is admitted: the map is bounded by the allow-list (and pruned
// of idle peers when it grows).
type requestRates struct {
	perSec float64
	burst  int
	mu     sync.Mutex
	m      map[peer.ID]*peerRate
}

type peerRate struct {
	lim            *rate.Limiter
	saturatedSince time.Time // under requestRates.mu; zero: not saturated
}

// maxIdleLimiters is when idle peers' buckets are pruned.
const maxIdleLimiters = 1024

func newRequestRates(perSec int64) requestRates {
	// A burst of a quarter second, and at least two full frames, so that
	// an honest peer's pipelined requests never wait.
	return requestRates{perSec: float64(perSec), burst: int(max(perSec/4, 2*wire.MaxBatch))}
}

// reserve books n IDs for p and returns how long the request must wait;
// flood is set when p has kept the rate saturated for floodAfter.
func (r *requestRates) reserve(p peer.ID, n int, now time.Time) (wait time.Duration, flood bool, cancel func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pr, ok := r.m[p]
	if !ok {
		if r.m == nil {
			r.m = map[peer.ID]*peerRate{}
		}
		if len(r.m) >= maxIdleLimiters {
			for q, e := range r.m {
				if e.lim.TokensAt(now) >= float64(r.burst) { // full: idle for a while
					delete(r.m, q)
				}
			}
		}
		pr = &peerRate{lim: rate.NewLimiter(rate.Limit(r.perSec), r.burst)}
		r.m[p] = pr
	}
	res := pr.lim.ReserveN(now, min(n, r.burst))
	wait = res.DelayFrom(now)
	switch {
	case wait == 0:
		pr.saturatedSince = time.Time{}
	case pr.saturatedSince.IsZero():
		pr.saturatedSince = now
	case now.Sub(pr.saturatedSince) >= floodAfter:
		pr.saturatedSince = time.Time{} // one offence per floodAfter
		flood = true
	}
	return wait, flood, func() { res.CancelAt(now) }
}

// admitRequest waits until p may have n more IDs answered, or refuses the
// request (ErrRequestFlood) when p floods.
func (n *Node) admitRequest(p peer.ID, ids int) error {
	if n.rates.perSec <= 0 {
		return nil
	}
	now := time.Now()
	wait, flood, cancel := n.rates.reserve(p, ids, now)
	if wait == 0 {
		return nil
	}
	n.m.throttled.Inc()
	if flood || wait > maxRequestWait {
		cancel()
		return fmt.Errorf("%d IDs asked %v beyond the rate of %.0f/s: %w", ids, wait.Round(time.Millisecond), n.rates.perSec, ErrRequestFlood)
	}
	time.Sleep(wait) // bounded by maxRequestWait
	return nil
}
