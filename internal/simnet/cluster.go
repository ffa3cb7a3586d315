package simnet

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/marcopolo/simnet"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/cluster"
	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/node"
)

// Cluster is a running simulated network of real sg nodes.
type Cluster struct {
	topo  *Topology
	net   *simnet.Simnet
	nodes []*simNode
	byIP  map[string]int
	dir   string
	// log receives the nodes' eviction and gather logs: SG_SIMNET_LOG=1
	// sends them to stderr, else they are dropped.
	log *slog.Logger

	mu      sync.Mutex
	latency [][]time.Duration // one-way, by node index
	silent  map[[2]int]bool   // cut links, by ordered pair
}

// simNode is one node of the cluster and what it owns.
type simNode struct {
	spec  NodeSpec
	idx   int
	addr  *net.UDPAddr
	node  *node.Node
	store *chunkstore.Store
	roles *cluster.Roles
	conn  *linkConn

	cancel context.CancelFunc // stops Run and the gathers
	done   chan struct{}      // closed when Run has returned
	dead   atomic.Bool
	once   sync.Once
}

// Start builds and starts every node of t, connects them and waits until
// each has measured every other's RTT. Call it inside a synctest bubble;
// dir holds the gathered files. Close stops everything.
func Start(t *Topology, dir string) (_ *Cluster, err error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	c := &Cluster{topo: t, byIP: map[string]int{}, silent: map[[2]int]bool{}, dir: dir, log: slog.New(slog.DiscardHandler)}
	if os.Getenv("SG_SIMNET_LOG") != "" {
		c.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c.net = &simnet.Simnet{LatencyFunc: c.packetLatency}
	c.latency = t.latencyMatrix()

	keys := make([]crypto.PrivKey, len(t.Nodes))
	infos := make([]peer.AddrInfo, len(t.Nodes))
	for i := range t.Nodes {
		keys[i] = deterministicKey(t.Seed, i)
		id, err := peer.IDFromPrivateKey(keys[i])
		if err != nil {
			return nil, err
		}
		ip := simnet.IntToPublicIPv4(i)
		c.byIP[ip.String()] = i
		a, err := ma.NewMultiaddr(fmt.Sprintf("/ip4/%s/udp/8000/quic-v1", ip))
		if err != nil {
			return nil, err
		}
		infos[i] = peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{a}}
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	for i, spec := range t.Nodes {
		sn, err := c.startNode(i, spec, keys[i], infos)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", spec.Name, err)
		}
		c.nodes = append(c.nodes, sn)
	}
	c.net.Start()
	for _, sn := range c.nodes {
		ctx, cancel := context.WithCancel(context.Background())
		sn.cancel, sn.done = cancel, make(chan struct{})
		sn.roles = cluster.Serve(ctx, sn.node, sn.store, cluster.Config{
			Log: c.log.With("node", sn.spec.Name),
			Dir: filepath.Join(dir, sn.spec.Name),
			Gather: func(g *fetch.GatherConfig) {
				g.Prefetch = !t.Gather.NoPrefetch
				g.NoRelease = g.NoRelease || t.Gather.KeepHolders
			},
		})
		go func() {
			defer close(sn.done)
			_ = sn.node.Run(ctx)
		}()
	}
	return c, c.waitConnected()
}

func (c *Cluster) startNode(i int, spec NodeSpec, key crypto.PrivKey, infos []peer.AddrInfo) (*simNode, error) {
	budget := spec.StoreMiB << 20
	if budget == 0 {
		budget = 1 << 30
	}
	store, err := chunkstore.Open(chunkstore.Config{MemoryBudget: budget})
	if err != nil {
		return nil, err
	}
	sn := &simNode{spec: spec, idx: i, store: store, addr: &net.UDPAddr{IP: simnet.IntToPublicIPv4(i), Port: 8000}}
	link := simnet.NodeBiDiLinkSettings{
		Uplink:   simnet.LinkSettings{BitsPerSecond: int(spec.UpMbps * 1e6)},
		Downlink: simnet.LinkSettings{BitsPerSecond: int(spec.DownMbps * 1e6)},
	}
	spare, err := newSpareSocket()
	if err != nil {
		return nil, err
	}
	wrap := func(_ *net.UDPAddr, pc net.PacketConn) net.PacketConn {
		sn.conn = newLinkConn(pc, spare, c, i, spec.Loss, c.topo.Seed)
		return sn.conn
	}
	cfg := node.DefaultConfig()
	cfg.Identity = key
	cfg.Listen = []string{infos[i].Addrs[0].String()}
	cfg.Zone = spec.Zone
	cfg.IngestRate = int64(spec.IngestMBps * 1e6)
	if spec.ForgetPushes {
		cfg.PushLogIDs = 0
	}
	cfg.Uplink, cfg.Downlink = int64(spec.UpMbps*1e6/8), int64(spec.DownMbps*1e6/8)
	for j, in := range infos {
		if j != i {
			cfg.Peers = append(cfg.Peers, in)
		}
	}
	cfg.HostOptions = []libp2p.Option{
		simulatedQUIC(wrap, c.net, link),
		// Identify's address discovery stalls a synctest bubble, and
		// simulated addresses need no discovering.
		libp2p.DisableIdentifyAddressDiscovery(),
	}
	n, err := node.New(cfg, store)
	if err != nil {
		spare.close()
		store.Close()
		return nil, err
	}
	sn.node = n
	return sn, nil
}

// deterministicKey derives node i's identity from the scenario seed, so
// peer IDs (and whatever orders by them) repeat from run to run.
func deterministicKey(seed uint64, i int) crypto.PrivKey {
	var s [ed25519.SeedSize]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	binary.LittleEndian.PutUint64(s[8:], uint64(i)+1)
	k, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(s[:]))
	if err != nil {
		panic(err) // a 64-byte ed25519 key always unmarshals
	}
	return k
}

// waitConnected waits (in virtual time) until every node has an RTT and
// capacity for every other.
func (c *Cluster) waitConnected() error {
	deadline := time.Now().Add(time.Minute)
	for {
		ready := true
		for _, sn := range c.nodes {
			ps := sn.node.Peers()
			for _, p := range ps {
				if !p.Connected || p.RTT == 0 || p.InfoAge < 0 {
					ready = false
				}
			}
			if len(ps) < len(c.nodes)-1 {
				ready = false
			}
		}
		if ready {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("simnet: nodes did not all connect within a minute of virtual time")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Close stops every node and the network. It returns once every goroutine
// the cluster started has ended.
func (c *Cluster) Close() {
	for _, sn := range c.nodes {
		c.stopNode(sn)
	}
	c.net.Close()
}

func (c *Cluster) stopNode(sn *simNode) {
	sn.once.Do(func() {
		if sn.cancel != nil {
			sn.cancel()
			<-sn.done
			sn.roles.Wait()
		}
		_ = sn.node.Close()
		_ = sn.store.Close()
		if sn.conn != nil {
			sn.conn.spare.close() // libp2p may keep the endpoint open
		}
	})
}

// Kill crashes node i: its links go silent at once (peers see a crash, not
// a goodbye), then it stops.
func (c *Cluster) Kill(i int) {
	sn := c.nodes[i]
	sn.dead.Store(true)
	c.stopNode(sn)
}

// Cut silences the link between nodes a and b, both ways.
func (c *Cluster) Cut(a, b int) {
	c.mu.Lock()
	c.silent[[2]int{a, b}], c.silent[[2]int{b, a}] = true, true
	c.mu.Unlock()
}

// SetLatency changes the one-way latency between a and b, both ways.
func (c *Cluster) SetLatency(a, b int, d time.Duration) {
	c.mu.Lock()
	c.latency[a][b], c.latency[b][a] = d, d
	c.mu.Unlock()
}

// dropped reports whether a packet from i to j is lost to a cut or a crash.
func (c *Cluster) dropped(i, j int) bool {
	if c.nodes[i].dead.Load() || (j >= 0 && c.nodes[j].dead.Load()) {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.silent[[2]int{i, j}]
}

func (c *Cluster) index(a net.Addr) int {
	if u, ok := a.(*net.UDPAddr); ok {
		if i, ok := c.byIP[u.IP.String()]; ok {
			return i
		}
	}
	return -1
}

func (c *Cluster) packetLatency(p *simnet.Packet) time.Duration {
	i, j := c.index(p.From), c.index(p.To)
	if i < 0 || j < 0 {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.latency[i][j]
}

// latencyMatrix resolves the latency spec to one-way latencies by index.
func (t *Topology) latencyMatrix() [][]time.Duration {
	n := len(t.Nodes)
	m := make([][]time.Duration, n)
	for i := range m {
		m[i] = make([]time.Duration, n)
		for j := range m[i] {
			m[i][j] = time.Duration(t.Latency.Default)
			if z := t.Nodes[i].Zone; z != "" && z == t.Nodes[j].Zone && t.Latency.SameZone > 0 {
				m[i][j] = time.Duration(t.Latency.SameZone)
			}
		}
	}
	for _, p := range t.Latency.Pairs {
		a, b := t.node(p.A), t.node(p.B)
		m[a][b], m[b][a] = time.Duration(p.OneWay), time.Duration(p.OneWay)
	}
	return m
}

// linkConn is a node's socket: it drops what cuts, crashes and loss drop,
// and counts the bytes it sends to each peer.
type linkConn struct {
	net.PacketConn
	spare *spareSocket
	c     *Cluster
	self  int
	loss  float64

	mu      sync.Mutex
	rng     *rand.Rand
	sent    map[int]int64
	largest int // the largest packet sent
}

func newLinkConn(pc net.PacketConn, spare *spareSocket, c *Cluster, self int, loss float64, seed uint64) *linkConn {
	return &linkConn{PacketConn: pc, spare: spare, c: c, self: self, loss: loss,
		rng: rand.New(rand.NewPCG(seed, uint64(self))), sent: map[int]int64{}}
}

func (l *linkConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	j := l.c.index(addr)
	if l.c.dropped(l.self, j) {
		return len(p), nil
	}
	l.mu.Lock()
	lost := l.loss > 0 && l.rng.Float64() < l.loss
	if !lost {
		l.sent[j] += int64(len(p))
		l.largest = max(l.largest, len(p))
	}
	l.mu.Unlock()
	if lost {
		return len(p), nil
	}
	return l.PacketConn.WriteTo(p, addr)
}

// SetReadBuffer and SetWriteBuffer keep quic-go from warning about
// buffer sizes (the simulated socket has none).
func (l *linkConn) SetReadBuffer(int) error  { return nil }
func (l *linkConn) SetWriteBuffer(int) error { return nil }

// SyscallConn hands quic-go the spare socket, for its socket options.
func (l *linkConn) SyscallConn() (syscall.RawConn, error) { return l.spare, nil }

func (l *linkConn) Close() error {
	l.spare.close()
	return l.PacketConn.Close()
}

// largestPacket returns the size of the largest packet sent so far.
func (l *linkConn) largestPacket() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.largest
}

// sentTo returns the bytes sent to each peer index so far.
func (l *linkConn) sentTo() map[int]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.sent)
}
