package node

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// gater admits only cluster members. It refuses a peer at the earliest
// point its identity is known: before dialing it, and right after the TLS
// handshake of an inbound connection, before any stream can be opened.
type gater struct {
	mu       sync.RWMutex
	allowed  map[peer.ID]bool
	banned   map[peer.ID]time.Time // until when; see Node.offence
	allowAny bool
	refused  func(peer.ID)
}

func (g *gater) admits(p peer.ID) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if until, ok := g.banned[p]; ok && time.Now().Before(until) {
		return false
	}
	return g.allowAny || g.allowed[p]
}

// ban refuses p until the given time, whatever the allow-list says.
func (g *gater) ban(p peer.ID, until time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.banned == nil {
		g.banned = map[peer.ID]time.Time{}
	}
	g.banned[p] = until
}

func (g *gater) admit(p peer.ID) {
	g.mu.Lock()
	g.allowed[p] = true
	g.mu.Unlock()
}

func (g *gater) InterceptPeerDial(p peer.ID) bool             { return g.check(p) }
func (g *gater) InterceptAddrDial(peer.ID, ma.Multiaddr) bool { return true }
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool  { return true }
func (g *gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.check(p)
}
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

func (g *gater) check(p peer.ID) bool {
	if g.admits(p) {
		return true
	}
	if g.refused != nil {
		g.refused(p)
	}
	return false
}
