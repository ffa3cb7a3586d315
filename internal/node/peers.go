package node

import (
	"cmp"
	"context"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/wire"
)

// rttAlpha weights a new RTT sample in the moving average: 0.2 follows a
// real change within a few samples but ignores one slow ping.
const rttAlpha = 0.2

type peerState struct {
	rtt      time.Duration // EWMA; 0 until the first sample
	missed   int           // consecutive failed pings
	info     wire.Info
	infoAt   time.Time
	lastSeen time.Time
}

// PeerInfo is what this node knows about one peer.
type PeerInfo struct {
	ID        peer.ID
	Addrs     []string
	Connected bool
	Admitted  bool
	RTT       time.Duration // moving average; 0 if never measured
	Zone      string
	MemFree   uint64
	DiskFree  uint64
	Load      uint32
	InfoAge   time.Duration // since capacity was last learned; -1 if never
}

// RTT returns the moving-average round-trip time to p, and false if it has
// never been measured.
func (n *Node) RTT(p peer.ID) (time.Duration, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if st, ok := n.peers[p]; ok && st.rtt > 0 {
		return st.rtt, true
	}
	return 0, false
}

func (n *Node) recordRTT(p peer.ID, sample time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.state(p)
	if st.rtt == 0 {
		st.rtt = sample
	} else {
		st.rtt = time.Duration(rttAlpha*float64(sample) + (1-rttAlpha)*float64(st.rtt))
	}
	st.lastSeen = time.Now()
}

func (n *Node) state(p peer.ID) *peerState {
	st, ok := n.peers[p]
	if !ok {
		st = &peerState{}
		n.peers[p] = st
	}
	return st
}

// maxMissedPings is how many pings in a row a peer may miss before its
// connection is closed: a killed peer sends no close, and its streams would
// otherwise hang until QUIC's idle timeout.
const maxMissedPings = 2

// refreshPeer pings p once and asks for its capacity.
func (n *Node) refreshPeer(ctx context.Context, p peer.ID) {
	pctx, cancel := context.WithTimeout(ctx, n.cfg.PingTimeout)
	defer cancel()
	var ok bool
	select {
	case res := <-n.ping.Ping(pctx, p):
		if res.Error == nil {
			n.recordRTT(p, res.RTT)
			ok = true
		}
	case <-pctx.Done():
	}
	if ctx.Err() != nil {
		return
	}
	n.mu.Lock()
	st := n.state(p)
	if ok {
		st.missed = 0
	} else {
		st.missed++
	}
	missed := st.missed
	n.mu.Unlock()
	if !ok {
		if missed >= maxMissedPings {
			n.log.Warn("peer stopped answering pings; closing its connection", "peer", p, "missed", missed)
			_ = n.host.Network().ClosePeer(p)
		}
		return
	}
	ctx, cancel = context.WithTimeout(ctx, n.cfg.RequestTimeout)
	defer cancel()
	if info, err := n.Info(ctx, p); err == nil {
		n.mu.Lock()
		st := n.state(p)
		st.info, st.infoAt = info, time.Now()
		n.mu.Unlock()
	}
}

// Peers lists cluster members and connected peers, nearest first.
func (n *Node) Peers() []PeerInfo {
	ids := map[peer.ID]bool{}
	for _, p := range n.cfg.Peers {
		if p.ID != n.host.ID() {
			ids[p.ID] = true
		}
	}
	for _, p := range n.host.Network().Peers() {
		ids[p] = true
	}
	out := make([]PeerInfo, 0, len(ids))
	n.mu.Lock()
	defer n.mu.Unlock()
	for id := range ids {
		pi := PeerInfo{
			ID:        id,
			Connected: n.host.Network().Connectedness(id) == network.Connected,
			Admitted:  n.gater.admits(id),
			InfoAge:   -1,
		}
		for _, a := range n.host.Peerstore().Addrs(id) {
			pi.Addrs = append(pi.Addrs, a.String())
		}
		if st, ok := n.peers[id]; ok {
			pi.RTT = st.rtt
			pi.Zone, pi.MemFree, pi.DiskFree, pi.Load = st.info.Zone, st.info.MemFree, st.info.DiskFree, st.info.Load
			if !st.infoAt.IsZero() {
				pi.InfoAge = time.Since(st.infoAt)
			}
		}
		out = append(out, pi)
	}
	slices.SortFunc(out, func(a, b PeerInfo) int {
		if a.Connected != b.Connected {
			if a.Connected {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(rttKey(a.RTT), rttKey(b.RTT)); c != 0 {
			return c
		}
		return strings.Compare(a.ID.String(), b.ID.String())
	})
	return out
}

// rttKey orders measured RTTs ascending and unmeasured (0) ones last.
func rttKey(d time.Duration) time.Duration {
	if d == 0 {
		return math.MaxInt64
	}
	return d
}

// PeerZone is the zone label p reported, "" if unknown.
func (n *Node) PeerZone(p peer.ID) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if st, ok := n.peers[p]; ok {
		return st.info.Zone
	}
	return ""
}
