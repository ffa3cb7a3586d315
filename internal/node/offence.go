package node

import (
	"errors"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/wire"
)

// offences counts what each peer did that no honest sg node does: chunk
// bytes that do not hash to their ID, malformed or oversized frames,
// frames of the wrong type, requests far beyond its rate. At Config.BanAfter offences the peer is cut
// off and refused for Config.BanFor, however admitted it was: a lying or
// broken peer stops costing us (and the peers we serve) at once.
type offences struct {
	mu    sync.Mutex
	count map[peer.ID]int
}

// isOffence tells a peer's protocol violation from an ordinary stream
// end (a reset, a timeout, our own shutdown).
func isOffence(err error) bool {
	return errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrFrameTooLarge) || errors.Is(err, wire.ErrUnexpected) ||
		errors.Is(err, ErrRequestFlood)
}

// offence records one offence by p and bans p once it has too many.
func (n *Node) offence(p peer.ID, what string) {
	if n.cfg.BanAfter <= 0 {
		return
	}
	n.offs.mu.Lock()
	if n.offs.count == nil {
		n.offs.count = map[peer.ID]int{}
	}
	n.offs.count[p]++
	c := n.offs.count[p]
	if c >= n.cfg.BanAfter {
		delete(n.offs.count, p)
	}
	n.offs.mu.Unlock()
	if c < n.cfg.BanAfter {
		n.log.Warn("peer misbehaved", "peer", p, "what", what, "offences", c)
		return
	}
	n.gater.ban(p, time.Now().Add(n.cfg.BanFor))
	n.m.banned.Inc()
	n.log.Warn("peer banned: disconnected and refused", "peer", p, "what", what, "for", n.cfg.BanFor)
	_ = n.host.Network().ClosePeer(p)
}
