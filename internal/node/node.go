package node

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/ratelimit"
)

// Protocol IDs. The version is part of the ID: a change to a protocol's
// frames gets a new ID.
const (
	ProtoPush protocol.ID = "/sg/push/3"
	ProtoHave protocol.ID = "/sg/have/1"
	ProtoGet  protocol.ID = "/sg/get/1"
	ProtoInfo protocol.ID = "/sg/info/1"
	// ProtoPushIDs answers a destination's "which IDs did that push
	// carry?" (see wire.PushPlacement).
	ProtoPushIDs protocol.ID = "/sg/pushids/1"
)

// Store is what a node serves chunks from and stores pushed chunks in.
// *chunkstore.Store implements it.
type Store interface {
	Has(id chunk.ID) bool
	Get(id chunk.ID, dst []byte) ([]byte, error)
	Put(id chunk.ID, data []byte) error
	Sync() error
	TierStats() []chunkstore.TierStats
}

// Node is one sg peer.
type Node struct {
	cfg   Config
	host  host.Host
	store Store
	log   *slog.Logger
	m     *metrics
	gater *gater
	ping  *ping.PingService

	load atomic.Int32  // requests being served
	kick chan struct{} // a new connection: refresh now (capacity 1)
	mig  migrationHandlers
	// ingest paces pushes when IngestRate is set; the sender feels it
	// through QUIC flow control.
	ingest *ratelimit.Limiter
	// quota caps what each peer's pushes may occupy here.
	quota *pushQuota
	// holds records why pushed chunks are kept, and for whom.
	holds *holds
	// exempt bounds what sources push here beyond their quota for the
	// migrations they opened here.
	exempt *exemptBudget
	// expiryDone is closed when the hold expiry goroutine has returned.
	expiryDone chan struct{}
	// pushes remembers the IDs of recent pushes stored here.
	pushes *pushLog
	offs   offences
	rates  requestRates
	// fullSince is when pushes were last refused for a full store (unix
	// ns): the warning is logged once per fullWarnEvery, not per chunk.
	fullSince atomic.Int64

	mu    sync.Mutex
	peers map[peer.ID]*peerState

	// life ends at Close: handlers waiting (on the ingest cap) stop then.
	life     context.Context
	stopLife context.CancelFunc
}

// Option adjusts how a Node is built.
type Option func(*options)

type options struct {
	log *slog.Logger
	reg prometheus.Registerer
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithRegistry registers the node's metrics on reg (default: a private registry).
func WithRegistry(reg prometheus.Registerer) Option { return func(o *options) { o.reg = reg } }

// New starts a libp2p host listening on cfg.Listen and registers the sg
// protocols. Call Run to dial peers and keep RTT and capacity fresh, and
// Close to stop.
func New(cfg Config, store Store, opts ...Option) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := options{log: slog.New(slog.DiscardHandler), reg: prometheus.NewRegistry()}
	for _, opt := range opts {
		opt(&o)
	}
	n := &Node{cfg: cfg, store: store, log: o.log, peers: make(map[peer.ID]*peerState), kick: make(chan struct{}, 1),
		ingest: ratelimit.New(cfg.IngestRate), pushes: newPushLog(cfg.PushLogIDs),
		rates: newRequestRates(cfg.RequestRate)}
	var budgets int64
	for _, t := range store.TierStats() {
		budgets += t.Budget
	}
	n.quota = newPushQuota(pushQuotaFor(cfg.PushQuota, budgets))
	lease := cfg.HoldLease
	if lease == 0 {
		lease = DefaultHoldLease
	}
	n.holds = newHolds(store, lease, n.quota)
	n.exempt = newExemptBudget()
	n.life, n.stopLife = context.WithCancel(context.Background())
	n.gater = &gater{allowed: make(map[peer.ID]bool), allowAny: cfg.AllowAny}
	for _, p := range cfg.Peers {
		n.gater.allowed[p.ID] = true
	}
	for _, p := range cfg.Allow {
		n.gater.allowed[p] = true
	}
	if cfg.AllowAny {
		n.log.Warn("every peer is admitted: ANY peer that can reach this node may connect, push and fetch chunks. Use only in a lab.")
	}

	rm, err := newResourceManager()
	if err != nil {
		return nil, fmt.Errorf("node: resource manager: %w", err)
	}
	hopts := []libp2p.Option{
		libp2p.Identity(cfg.Identity),
		libp2p.NoTransports,
		libp2p.Transport(libp2pquic.NewTransport),
		libp2p.ConnectionGater(n.gater),
		libp2p.ResourceManager(rm),
		libp2p.DisableRelay(),
		libp2p.Ping(false), // we run our own ping service to keep RTTs
	}
	if len(cfg.Listen) > 0 {
		hopts = append(hopts, libp2p.ListenAddrStrings(cfg.Listen...))
	}
	hopts = append(hopts, cfg.HostOptions...)
	h, err := libp2p.New(hopts...)
	if err != nil {
		return nil, fmt.Errorf("node: start libp2p host: %w", err)
	}
	n.host = h
	n.holds.self = h.ID()
	n.m = newMetrics(o.reg, func() float64 { return float64(len(h.Network().Peers())) })
	n.gater.refused = func(p peer.ID) {
		n.m.refused.Inc()
		n.log.Warn("refused connection from a peer that is not admitted", "peer", p)
	}
	n.reportUDPBuffers()
	n.ping = ping.NewPingService(h)
	h.Network().Notify(&network.NotifyBundle{ConnectedF: func(network.Network, network.Conn) {
		select {
		case n.kick <- struct{}{}:
		default: // a refresh is already due
		}
	}})
	for _, p := range cfg.Peers {
		h.Peerstore().AddAddrs(p.ID, p.Addrs, time.Hour*24*365)
	}
	h.SetStreamHandler(ProtoPush, n.handlePush)
	h.SetStreamHandler(ProtoHave, n.handleHave)
	h.SetStreamHandler(ProtoGet, n.handleGet)
	h.SetStreamHandler(ProtoInfo, n.handleInfo)
	h.SetStreamHandler(ProtoPushIDs, n.handlePushIDs)
	h.SetStreamHandler(ProtoMigrate, n.handleMigrate)
	n.expiryDone = make(chan struct{})
	go func() {
		defer close(n.expiryDone)
		n.runExpiry(n.life)
	}()
	return n, nil
}

// newResourceManager bounds what peers can make us spend: the libp2p
// defaults scaled to this machine, plus per-protocol stream limits for
// sg's protocols. Our own frame and window caps bound the bytes.
func newResourceManager() (network.ResourceManager, error) {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	perProto := func(streams int) (rcmgr.BaseLimit, rcmgr.BaseLimitIncrease) {
		return rcmgr.BaseLimit{Streams: streams, StreamsInbound: streams, StreamsOutbound: streams, Memory: 256 << 20},
			rcmgr.BaseLimitIncrease{}
	}
	for _, p := range []struct {
		id       protocol.ID
		all, per int
	}{
		{ProtoPush, 1024, 64}, {ProtoGet, 1024, 64}, {ProtoHave, 256, 16}, {ProtoInfo, 256, 8}, {ProtoMigrate, 512, 32},
		{ProtoPushIDs, 256, 16},
	} {
		base, inc := perProto(p.all)
		limits.AddProtocolLimit(p.id, base, inc)
		base, inc = perProto(p.per)
		limits.AddProtocolPeerLimit(p.id, base, inc)
	}
	return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale()))
}

// ID is this node's peer ID.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Addrs are the addresses this node listens on, each with /p2p/<id>.
func (n *Node) Addrs() []ma.Multiaddr {
	p2p, _ := ma.NewComponent("p2p", n.host.ID().String())
	var out []ma.Multiaddr
	for _, a := range n.host.Addrs() {
		out = append(out, a.Encapsulate(p2p.Multiaddr()))
	}
	return out
}

// Host exposes the libp2p host (for tests and benchmarks).
func (n *Node) Host() host.Host { return n.host }

// Admit adds p to the allow-list at run time.
func (n *Node) Admit(p peer.ID) { n.gater.admit(p) }

// Admitted reports whether p may connect.
func (n *Node) Admitted(p peer.ID) bool { return n.gater.admits(p) }

// Connect dials p (which must be admitted) at addrs.
func (n *Node) Connect(ctx context.Context, p peer.AddrInfo) error {
	if err := n.host.Connect(ctx, p); err != nil {
		return fmt.Errorf("connect to %s: %w", p.ID, err)
	}
	n.refreshPeer(ctx, p.ID)
	return nil
}

// Run keeps the cluster connected and each peer's RTT and capacity fresh
// until ctx ends. It returns nil on cancellation.
//
// Two loops: the dialer redials cluster members that are not connected
// (a member that is down can take seconds to time out), and the prober
// pings and asks every connected peer for its capacity, each round and at
// once when a new connection appears.
func (n *Node) Run(ctx context.Context) error {
	var g errgroup.Group
	g.Go(func() error { n.every(ctx, nil, n.dialMissing); return nil })
	g.Go(func() error { n.every(ctx, n.kick, n.probeConnected); return nil })
	return g.Wait()
}

// every runs round now and then on each tick (or kick) until ctx ends.
func (n *Node) every(ctx context.Context, kick <-chan struct{}, round func(context.Context)) {
	t := time.NewTicker(n.cfg.RefreshInterval)
	defer t.Stop()
	for {
		round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		}
	}
}

func (n *Node) dialMissing(ctx context.Context) {
	var g errgroup.Group
	g.SetLimit(16)
	for _, p := range n.cfg.Peers {
		if p.ID == n.host.ID() || n.host.Network().Connectedness(p.ID) == network.Connected {
			continue
		}
		g.Go(func() error {
			dctx, cancel := context.WithTimeout(ctx, n.cfg.RefreshInterval*3)
			defer cancel()
			if err := n.host.Connect(dctx, p); err != nil {
				n.log.Debug("dial cluster peer", "peer", p.ID, "err", err)
			}
			return nil
		})
	}
	g.Wait()
}

func (n *Node) probeConnected(ctx context.Context) {
	var g errgroup.Group
	g.SetLimit(16)
	for _, p := range n.host.Network().Peers() {
		g.Go(func() error { n.refreshPeer(ctx, p); return nil })
	}
	g.Wait()
}

// Close stops the host. In-flight streams are reset.
func (n *Node) Close() error {
	n.stopLife()
	<-n.expiryDone
	return n.host.Close()
}

// reportUDPBuffers logs and exports the UDP socket buffers the kernel
// grants QUIC, warning with the sysctl to raise when they fall short of
// what quic-go asks for (the node still runs, at a lower rate).
func (n *Node) reportUDPBuffers() {
	b, err := probeUDPBuffers()
	n.m.udpBuffer.WithLabelValues("recv").Set(float64(b.recv))
	n.m.udpBuffer.WithLabelValues("send").Set(float64(b.send))
	switch {
	case err != nil:
		n.log.Warn("could not measure the UDP socket buffers", "err", err)
	case b.enough():
		n.log.Info("UDP socket buffers", "recv_bytes", b.recv, "send_bytes", b.send, "wanted_bytes", quicUDPBuffer)
	default:
		n.log.Warn("UDP socket buffers below what QUIC wants: raise them with sysctl -w net.core.rmem_max=7340032 net.core.wmem_max=7340032",
			"recv_bytes", b.recv, "send_bytes", b.send, "wanted_bytes", quicUDPBuffer)
	}
}
