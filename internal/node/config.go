package node

import (
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/sgrelay/sg/internal/wire"
)

// Config configures a Node.
type Config struct {
	Identity crypto.PrivKey
	Listen   []string        // multiaddrs, QUIC only (…/udp/N/quic-v1)
	Peers    []peer.AddrInfo // cluster members: dialed and admitted
	Allow    []peer.ID       // admitted too, but not dialed
	AllowAny bool            // admit every peer: labs only
	Zone     string          // locality label shared with peers

	// RefreshInterval is how often peers are (re)dialed, pinged and asked
	// for their capacity.
	RefreshInterval time.Duration
	// RequestTimeout bounds each wait for a peer's answer, so a peer that
	// goes silent fails requests instead of hanging them.
	RequestTimeout time.Duration
	// PingTimeout bounds one liveness ping; a peer that misses two in a
	// row is disconnected, failing its streams at once.
	PingTimeout time.Duration
	// IngestRate caps the bytes per second this node accepts by push, all
	// peers together (0: no cap). It protects a host's foreground traffic;
	// the lab also uses it to model a slow destination.
	IngestRate int64
	// Uplink and Downlink are this host's link rates in bytes per second
	// (0: not said). The downlink (or IngestRate, if lower) is told to
	// peers; a source weighs it against its uplink to decide whether its
	// destination may gather from the relays during the scatter
	// (eviction.Config.Uplink).
	Uplink, Downlink int64
	// PushQuota caps the bytes any one peer's pushes may occupy in this
	// node's store; pushes beyond it are answered "full", and the pusher
	// places the chunks elsewhere. 0: DefaultPushQuotaShare of the
	// store's budgets; negative: no cap.
	PushQuota int64
	// HoldLease is how long the chunks of a migration are kept when its
	// destination neither releases nor renews them (0: DefaultHoldLease).
	HoldLease time.Duration
	// RequestRate caps the chunk IDs per second one peer may name in have
	// and get requests (0: no cap). Requests beyond it wait; a request
	// that would wait over two seconds is refused as an offence.
	RequestRate int64
	// BanAfter offences (wrong chunk bytes, malformed or oversized
	// frames) a peer is disconnected and refused for BanFor (0: never).
	BanAfter int
	BanFor   time.Duration
	// PushWindow is how many push batches one stream keeps in flight.
	PushWindow int
	// PushLogIDs bounds the chunk IDs of recent pushes remembered for
	// destinations that ask which chunks a placed push carried (32 bytes
	// each; 0: none, and those destinations are sent the manifest).
	PushLogIDs int

	// MaxIncomingPositions caps the chunk positions of one migration
	// opened to this node, MaxIncomingPerPeer the migrations one source
	// may have open here at once, and MaxIncomingBytesPerPeer their total
	// size (0: the defaults of the gathers' admission, internal/fetch).
	// An Open beyond them, or larger than the free disk where gathered
	// VMs are written, is refused before anything is allocated for it;
	// the migration sink (internal/cluster) applies them.
	MaxIncomingPositions    int64
	MaxIncomingPerPeer      int
	MaxIncomingBytesPerPeer int64
	// MaxOpenPositions caps the chunk positions of all migrations opened
	// here and not yet retired, from every source together (their gathers'
	// state); 0: a quarter of the host's memory at 512 bytes a position.
	MaxOpenPositions int64

	// HostOptions are extra libp2p options (simnet plugs its simulated
	// QUIC transport in here). Not settable from a config file.
	HostOptions []libp2p.Option
}

// DefaultRequestRate is how many chunk IDs per second a peer may ask
// about: twice what a 40 Gbit/s migration of 4 KiB pages needs.
const DefaultRequestRate = 2_500_000

// DefaultConfig listens on all IPv4 addresses on UDP 4100.
func DefaultConfig() Config {
	return Config{
		Listen:          []string{"/ip4/0.0.0.0/udp/4100/quic-v1"},
		RefreshInterval: 2 * time.Second,
		RequestTimeout:  30 * time.Second,
		PingTimeout:     3 * time.Second,
		PushWindow:      8,
		PushLogIDs:      1 << 20,
		BanAfter:        3,
		RequestRate:     DefaultRequestRate,
		BanFor:          10 * time.Minute,
	}
}

// Validate reports the first thing wrong with c.
func (c Config) Validate() error {
	if c.Identity == nil {
		return errors.New("node: no identity key")
	}
	if len(c.Listen) == 0 && len(c.HostOptions) == 0 {
		return errors.New("node: no listen address")
	}
	for _, l := range c.Listen {
		a, err := ma.NewMultiaddr(l)
		if err != nil {
			return fmt.Errorf("node: listen address %q: %w", l, err)
		}
		if _, err := a.ValueForProtocol(ma.P_QUIC_V1); err != nil {
			return fmt.Errorf("node: listen address %q is not QUIC (want …/udp/PORT/quic-v1)", l)
		}
	}
	if len(c.Zone) > wire.MaxZoneLen {
		return fmt.Errorf("node: zone label longer than %d bytes", wire.MaxZoneLen)
	}
	if c.RequestRate < 0 || c.PushLogIDs < 0 || c.HoldLease < 0 {
		return errors.New("node: request rate, push log size or hold lease is negative")
	}
	if c.MaxIncomingPositions < 0 || c.MaxIncomingPerPeer < 0 || c.MaxIncomingBytesPerPeer < 0 || c.MaxOpenPositions < 0 {
		return errors.New("node: incoming migration caps are negative")
	}
	if c.RefreshInterval <= 0 || c.RequestTimeout <= 0 || c.PingTimeout <= 0 || c.PushWindow <= 0 {
		return errors.New("node: refresh interval, request and ping timeouts and push window must be positive")
	}
	return nil
}
