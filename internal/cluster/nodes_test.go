package cluster

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/node"
	"github.com/sgrelay/sg/internal/wire"
)

// The tests run real nodes on loopback and play their peers in raw
// frames, as internal/node's own tests do; these helpers are their
// counterparts over the node's exported API.

type testNode struct {
	*node.Node
	store *chunkstore.Store
}

// newTestNodes starts n nodes on loopback that all admit each other.
func newTestNodes(t testing.TB, n int, tweak func(i int, c *node.Config)) []testNode {
	t.Helper()
	return newTestNodesWithStore(t, n, chunkstore.Config{MemoryBudget: 512 << 20}, tweak)
}

// newTestNodesWithStore is newTestNodes with stores configured as sc.
func newTestNodesWithStore(t testing.TB, n int, sc chunkstore.Config, tweak func(i int, c *node.Config)) []testNode {
	t.Helper()
	keys := make([]crypto.PrivKey, n)
	ids := make([]peer.ID, n)
	for i := range keys {
		k, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
		ids[i], _ = peer.IDFromPrivateKey(k)
	}
	out := make([]testNode, n)
	for i := range out {
		cfg := node.DefaultConfig()
		cfg.Identity = keys[i]
		cfg.Listen = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
		cfg.Allow = ids
		cfg.RequestTimeout = 5 * time.Second
		if tweak != nil {
			tweak(i, &cfg)
		}
		st, err := chunkstore.Open(sc)
		if err != nil {
			t.Fatal(err)
		}
		nd, err := node.New(cfg, st)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nd.Close(); st.Close() })
		out[i] = testNode{nd, st}
	}
	return out
}

func connect(t testing.TB, a, b testNode) {
	t.Helper()
	if err := a.Connect(t.Context(), peer.AddrInfo{ID: b.ID(), Addrs: b.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
}

func randomChunks(n, size int) []wire.Chunk {
	out := make([]wire.Chunk, n)
	for i := range out {
		d := make([]byte, size)
		rand.Read(d)
		out[i] = wire.Chunk{ID: chunk.Sum(d), Data: d}
	}
	return out
}

func randomMigrationID() wire.MigrationID {
	var id wire.MigrationID
	rand.Read(id[:])
	return id
}

func migrationHold(dest testNode, ids ...wire.MigrationID) wire.Hold {
	return wire.Hold{Kind: wire.HoldMigration, IDs: ids, Dest: dest.ID().String()}
}

// testHold is what the tests' plain pushes say they are for: a put, kept
// until removed.
var testHold = wire.Hold{Kind: wire.HoldPut, IDs: []wire.MigrationID{{1}}}

// pushOnce pushes chunks from a to b in one batch, for a put, and returns
// b's statuses.
func pushOnce(t *testing.T, a, b testNode, chunks []wire.Chunk) []wire.Status {
	t.Helper()
	st, err := tryPushFor(t, a, b, testHold, chunks)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// pushAllFor pushes chunks from a to b for h and fails unless b stored
// every one.
func pushAllFor(t *testing.T, a, b testNode, h wire.Hold, chunks []wire.Chunk) {
	t.Helper()
	for i := 0; i < len(chunks); i += 16 {
		st, err := tryPushFor(t, a, b, h, chunks[i:min(len(chunks), i+16)])
		if err != nil {
			t.Fatal(err)
		}
		for j, s := range st {
			if s != wire.StatusOK {
				t.Fatalf("chunk %d: %v", i+j, s)
			}
		}
	}
}

// tryPushFor pushes chunks from a to b in one batch, for h, in raw frames.
func tryPushFor(t *testing.T, a, b testNode, h wire.Hold, chunks []wire.Chunk) ([]wire.Status, error) {
	s, err := a.Host().NewStream(t.Context(), b.ID(), node.ProtoPush)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if _, err := s.Write(append(wire.AppendHold(nil, h), wire.AppendPush(nil, chunks)...)); err != nil {
		return nil, err
	}
	p, err := wire.NewReader(s, 0).Expect(wire.TypePushAck)
	if err != nil {
		return nil, err
	}
	st, _, err := wire.DecodePushAck(p, nil)
	return st, err
}

// controlStream opens a /sg/migrate control stream from src to dst and
// sends frames one by one, each answered by an Ack (whatever its status);
// the stream stays open for the caller.
func controlStream(t *testing.T, src, dst testNode, frames ...[]byte) (network.Stream, *wire.Reader) {
	t.Helper()
	s, err := src.Host().NewStream(t.Context(), dst.ID(), node.ProtoMigrate)
	if err != nil {
		t.Fatal(err)
	}
	rd := wire.NewReader(s, 0)
	for _, f := range frames {
		if _, err := s.Write(f); err != nil {
			t.Fatal(err)
		}
		if _, err := rd.Expect(wire.TypeAck); err != nil {
			t.Fatal(err)
		}
	}
	return s, rd
}

func countHeld(st interface{ Has(chunk.ID) bool }, chunks []wire.Chunk) int {
	n := 0
	for _, c := range chunks {
		if st.Has(c.ID) {
			n++
		}
	}
	return n
}

// relayCluster is a source, a destination and a relay running Roles.
func relayCluster(t *testing.T) (src, dest, relay testNode) {
	nodes := newTestNodes(t, 3, nil)
	src, dest, relay = nodes[0], nodes[1], nodes[2]
	connect(t, src, relay)
	connect(t, dest, relay)
	connect(t, dest, src)
	roles := Serve(t.Context(), relay.Node, relay.store, Config{Dir: t.TempDir()})
	t.Cleanup(roles.Wait)
	return src, dest, relay
}
