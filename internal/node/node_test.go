package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/wire"
)

type testNode struct {
	*Node
	store *chunkstore.Store
}

// newTestNodes starts n nodes on loopback that all admit each other.
func newTestNodes(t testing.TB, n int, tweak func(i int, c *Config)) []testNode {
	t.Helper()
	return newTestNodesWithStore(t, n, chunkstore.Config{MemoryBudget: 512 << 20}, tweak)
}

// newTestNodesWithStore is newTestNodes with stores configured as sc.
func newTestNodesWithStore(t testing.TB, n int, sc chunkstore.Config, tweak func(i int, c *Config)) []testNode {
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
		cfg := DefaultConfig()
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
		nd, err := New(cfg, st)
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

func TestPushHaveGetInfo(t *testing.T) {
	nodes := newTestNodes(t, 2, func(i int, c *Config) { c.Zone = []string{"a", "b"}[i] })
	a, b := nodes[0], nodes[1]
	connect(t, a, b)
	ctx := t.Context()

	cs := randomChunks(20, 4096)
	st, err := a.Push(ctx, b.ID(), testHold, cs)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range st {
		if s != wire.StatusOK {
			t.Fatalf("chunk %d: %s", i, s)
		}
		if !b.store.Has(cs[i].ID) {
			t.Fatalf("chunk %d acked but not stored", i)
		}
	}

	absent := randomChunks(1, 100)[0].ID
	held, err := a.Have(ctx, b.ID(), []chunk.ID{cs[0].ID, absent, cs[19].ID})
	if err != nil {
		t.Fatal(err)
	}
	if !held[0] || held[1] || !held[2] {
		t.Fatalf("have = %v, want [true false true]", held)
	}

	gs, err := a.OpenGet(ctx, b.ID(), wire.Demand, 4)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	ids := []chunk.ID{cs[3].ID, absent, cs[7].ID}
	if err := gs.Get(ctx, ids, func(res []wire.GetResult, err error) {
		switch {
		case err != nil:
		case res[0].Status != wire.StatusOK || !bytes.Equal(res[0].Data, cs[3].Data):
			err = errors.New("chunk 3 wrong")
		case res[1].Status != wire.StatusMissing:
			err = errors.New("absent chunk not reported missing")
		case res[2].Status != wire.StatusOK || !bytes.Equal(res[2].Data, cs[7].Data):
			err = errors.New("chunk 7 wrong")
		}
		got <- err
	}); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if err := gs.Close(); err != nil {
		t.Fatal(err)
	}

	info, err := a.Info(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	if info.Zone != "b" || info.MemFree == 0 || info.MemFree >= 512<<20 {
		t.Fatalf("info %+v: want zone b and less than 512 MiB free after pushes", info)
	}
}

func TestPipelinedPushStream(t *testing.T) {
	nodes := newTestNodes(t, 2, nil)
	a, b := nodes[0], nodes[1]
	connect(t, a, b)
	ps, err := a.OpenPush(t.Context(), b.ID(), testHold)
	if err != nil {
		t.Fatal(err)
	}
	const batches = 50
	acked := make(chan int, batches)
	var all []wire.Chunk
	for range batches {
		cs := randomChunks(16, 4096)
		all = append(all, cs...)
		if err := ps.Push(t.Context(), cs, func(st []wire.Status, err error) {
			ok := 0
			for _, s := range st {
				if s == wire.StatusOK {
					ok++
				}
			}
			if err != nil {
				ok = -1
			}
			acked <- ok
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ps.Close(); err != nil {
		t.Fatal(err)
	}
	for range batches {
		if ok := <-acked; ok != 16 {
			t.Fatalf("a batch acked %d of 16", ok)
		}
	}
	for _, c := range all {
		if !b.store.Has(c.ID) {
			t.Fatal("acked chunk missing at receiver")
		}
	}
}

// A push carries no IDs: the receiver stores each chunk under the ID of
// its bytes and answers with a digest of those IDs, so a pusher whose
// bytes are not what it meant (here, bytes that do not hash to the ID it
// gives) learns that nothing it meant was stored.
func TestPushStoresUnderComputedID(t *testing.T) {
	nodes := newTestNodes(t, 2, nil)
	a, b := nodes[0], nodes[1]
	connect(t, a, b)
	good := randomChunks(2, 4096)
	st, err := a.Push(t.Context(), b.ID(), testHold, good)
	if err != nil || st[0] != wire.StatusOK || st[1] != wire.StatusOK {
		t.Fatalf("honest push: %v, %v", st, err)
	}
	for _, c := range good {
		if !b.store.Has(c.ID) {
			t.Fatalf("chunk %s not stored under its ID", c.ID.Short())
		}
	}
	other := randomChunks(1, 4096)[0]
	wrong := wire.Chunk{ID: other.ID, Data: bytes.Repeat([]byte{0xab}, 4096)}
	if _, err := a.Push(t.Context(), b.ID(), testHold, []wire.Chunk{wrong}); !errors.Is(err, ErrStoredOtherBytes) {
		t.Fatalf("push of bytes that do not hash to their ID: %v, want ErrStoredOtherBytes", err)
	}
	if b.store.Has(other.ID) {
		t.Fatal("the claimed ID is in the store")
	}
	if !b.store.Has(chunk.Sum(wrong.Data)) {
		t.Fatal("the bytes are not stored under their own ID")
	}
}

func TestPushAckDigestChecked(t *testing.T) {
	c := randomChunks(2, 64)
	ack := wire.AppendPushAck(nil, []wire.Status{wire.StatusOK, wire.StatusOK}, wire.PushDigest(c))
	payload := ack[5:]
	if _, err := decodePushAck(payload, nil, 2, wire.PushDigest(c)); err != nil {
		t.Fatalf("matching digest: %v", err)
	}
	if _, err := decodePushAck(payload, nil, 2, wire.PushDigest(c[:1])); !errors.Is(err, ErrStoredOtherBytes) {
		t.Fatalf("other digest: %v, want ErrStoredOtherBytes", err)
	}
	if _, err := decodePushAck(payload, nil, 3, wire.PushDigest(c)); !errors.Is(err, wire.ErrMalformed) {
		t.Fatalf("two statuses for three chunks: %v, want ErrMalformed", err)
	}
}

func TestMalformedFrameEndsStreamOnly(t *testing.T) {
	nodes := newTestNodes(t, 2, nil)
	a, b := nodes[0], nodes[1]
	connect(t, a, b)
	s, err := a.Host().NewStream(t.Context(), b.ID(), ProtoPush)
	if err != nil {
		t.Fatal(err)
	}
	// A push claiming one chunk but carrying a truncated header.
	frame := wire.Finish(append(wire.Begin(nil, wire.TypePush), 0, 1, 1, 2, 3))
	if _, err := s.Write(frame); err != nil {
		t.Fatal(err)
	}
	if _, err := wire.NewReader(s, 0).Expect(wire.TypePushAck); err == nil {
		t.Fatal("a malformed push was acknowledged")
	}
	s.Reset()
	// The node still serves this peer on a new stream.
	if _, err := a.Info(t.Context(), b.ID()); err != nil {
		t.Fatalf("node stopped serving after a malformed frame: %v", err)
	}
}

func TestUnadmittedPeerRefused(t *testing.T) {
	members := newTestNodes(t, 2, nil)
	stranger := newTestNodes(t, 1, func(_ int, c *Config) { c.AllowAny = true })[0]
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	err := stranger.Connect(ctx, peer.AddrInfo{ID: members[0].ID(), Addrs: members[0].Host().Addrs()})
	if err == nil {
		// The handshake may complete on the stranger's side before the
		// member's gater closes it: then no stream may get through.
		if _, perr := stranger.Push(ctx, members[0].ID(), testHold, randomChunks(1, 64)); perr == nil {
			t.Fatal("an unadmitted peer pushed a chunk")
		}
	}
	if members[0].store.Stats().Chunks != 0 {
		t.Fatal("a chunk from an unadmitted peer was stored")
	}
	// And members refuse to dial it.
	if err := members[0].Connect(ctx, peer.AddrInfo{ID: stranger.ID(), Addrs: stranger.Host().Addrs()}); err == nil {
		t.Fatal("a member dialed a peer that is not admitted")
	}
}

func TestRTTMeasured(t *testing.T) {
	nodes := newTestNodes(t, 3, nil)
	connect(t, nodes[0], nodes[1])
	connect(t, nodes[0], nodes[2])
	for _, p := range []testNode{nodes[1], nodes[2]} {
		rtt, ok := nodes[0].RTT(p.ID())
		if !ok || rtt <= 0 || rtt > time.Second {
			t.Fatalf("RTT to %s = %v, %v", p.ID(), rtt, ok)
		}
	}
	ps := nodes[0].Peers()
	if len(ps) != 2 || !ps[0].Connected || ps[0].RTT == 0 || ps[0].InfoAge < 0 {
		t.Fatalf("Peers() = %+v", ps)
	}
}

// pushOnce pushes chunks from a to b in one batch and returns b's statuses.
func pushOnce(t *testing.T, a, b testNode, chunks []wire.Chunk) []wire.Status {
	t.Helper()
	st, err := tryPush(t, a, b, chunks)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func tryPush(t *testing.T, a, b testNode, chunks []wire.Chunk) ([]wire.Status, error) {
	return tryPushFor(t, a, b, testHold, chunks)
}

// tryPushFor pushes chunks from a to b in one batch, for h, in raw frames.
func tryPushFor(t *testing.T, a, b testNode, h wire.Hold, chunks []wire.Chunk) ([]wire.Status, error) {
	s, err := a.Host().NewStream(t.Context(), b.ID(), ProtoPush)
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

// One peer cannot fill a relay beyond its quota: its excess is answered
// "full" (and not stored), another peer still gets its own share, a chunk
// already stored costs only its hold entry, and a release by the
// migration's destination gives the share back.
func TestPushQuotaPerPeer(t *testing.T) {
	nodes := newTestNodes(t, 3, func(i int, c *Config) {
		if i == 1 {
			c.PushQuota = 8*(4096+2*chunkOverhead) + chunkOverhead // 8 new chunks and one hold on a stored one
		}
	})
	a, relay, c := nodes[0], nodes[1], nodes[2]
	connect(t, a, relay)
	connect(t, c, relay)

	mig := wire.Hold{Kind: wire.HoldMigration, IDs: []wire.MigrationID{{7}}, Dest: c.ID().String()}
	fromA := randomChunks(12, 4096)
	st, err := tryPushFor(t, a, relay, mig, fromA)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range st {
		if want := wire.StatusOK; i >= 8 {
			want = wire.StatusFull
			if s != want || relay.store.Has(fromA[i].ID) {
				t.Fatalf("chunk %d over a's quota: %v, stored %v", i, s, relay.store.Has(fromA[i].ID))
			}
		} else if s != want {
			t.Fatalf("chunk %d within a's quota: %v", i, s)
		}
	}
	// c has its own share, and a chunk a already stored costs it only its
	// hold entry.
	fromC := append(randomChunks(8, 4096), fromA[0])
	for i, s := range pushOnce(t, c, relay, fromC) {
		if s != wire.StatusOK {
			t.Fatalf("c's chunk %d: %v", i, s)
		}
	}
	// The migration's destination releasing a's chunks gives a its share
	// back (all but the one c keeps too).
	if freed, err := relay.ReleaseHeld(c.ID(), mig.IDs[0], true); err != nil || freed != 7 {
		t.Fatalf("release freed %d, %v; want 7", freed, err)
	}
	for i, s := range pushOnce(t, a, relay, fromA[8:]) {
		if s != wire.StatusOK {
			t.Fatalf("after the release, a's chunk %d: %v", 8+i, s)
		}
	}
}

// A peer that keeps serving wrong bytes is cut off and refused, however
// admitted: nothing it served is kept, and the victim goes on serving
// others.
func TestLyingPeerBanned(t *testing.T) {
	nodes := newTestNodes(t, 3, nil)
	liar, victim, honest := nodes[0], nodes[1], nodes[2]
	connect(t, liar, victim)
	connect(t, honest, victim)
	for i := range victim.cfg.BanAfter {
		good := randomChunks(1, 4096)[0]
		if err := liar.store.Put(good.ID, bytes.Repeat([]byte{byte(i)}, 4096)); err != nil {
			t.Fatal(err)
		}
		gs, err := victim.OpenGet(t.Context(), liar.ID(), wire.Demand, 1)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan wire.Status, 1)
		if err := gs.Get(t.Context(), []chunk.ID{good.ID}, func(res []wire.GetResult, err error) {
			if err != nil {
				got <- wire.StatusFailed
				return
			}
			got <- res[0].Status
		}); err != nil {
			t.Fatal(err)
		}
		last := i == victim.cfg.BanAfter-1 // cut off before its answer, maybe
		if st := <-got; st != wire.StatusBadHash && !(last && st == wire.StatusFailed) {
			t.Fatalf("lie %d: %v, want bad-hash", i, st)
		}
		gs.Abort()
		if victim.store.Has(good.ID) {
			t.Fatal("a lying chunk was stored")
		}
	}
	if victim.Admitted(liar.ID()) {
		t.Fatal("the liar is still admitted after its offences")
	}
	if err := liar.Connect(t.Context(), peer.AddrInfo{ID: victim.ID(), Addrs: victim.Host().Addrs()}); err == nil {
		if _, err := liar.Host().NewStream(t.Context(), victim.ID(), ProtoPush); err == nil {
			t.Fatal("the banned liar opened a stream to its victim")
		}
	}
	c := randomChunks(2, 4096)
	if st := pushOnce(t, honest, victim, c); st[0] != wire.StatusOK || st[1] != wire.StatusOK {
		t.Fatalf("an honest peer's push after the ban: %v", st)
	}
}

// Malformed or oversized frames count as offences too (this header claims
// a frame far beyond the cap).
func TestMalformedFramesBanPeer(t *testing.T) {
	nodes := newTestNodes(t, 2, func(_ int, c *Config) { c.BanAfter = 2 })
	bad, victim := nodes[0], nodes[1]
	connect(t, bad, victim)
	for range 2 {
		s, err := bad.Host().NewStream(t.Context(), victim.ID(), ProtoHave)
		if err != nil {
			t.Fatal(err)
		}
		s.Write([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) // a length no frame has
		wire.NewReader(s, 0).Next()                                     // the victim's error frame, or the reset
		s.Reset()
	}
	deadline := time.Now().Add(5 * time.Second)
	for victim.Admitted(bad.ID()) {
		if time.Now().After(deadline) {
			t.Fatal("a peer sending malformed frames stays admitted")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A peer that opens stream after stream and leaves them idle (or floods
// requests on many streams) is bounded per peer by the resource manager:
// its first 16 have streams are served, the rest refused, and the node goes
// on answering others.
func TestIdleStreamFloodBoundedPerPeer(t *testing.T) {
	nodes := newTestNodes(t, 3, nil)
	flooder, victim, honest := nodes[0], nodes[1], nodes[2]
	connect(t, flooder, victim)
	connect(t, honest, victim)
	var open []network.Stream
	defer func() {
		for _, s := range open {
			s.Reset()
		}
	}()
	refused := 0
	for range 40 {
		s, err := flooder.Host().NewStream(t.Context(), victim.ID(), ProtoHave)
		if err != nil {
			refused++
			continue
		}
		open = append(open, s) // and idle: no request yet
	}
	// Streams over the limit are reset by the victim: a request on one
	// gets no answer.
	deadline := time.Now().Add(5 * time.Second)
	for _, s := range open {
		s.SetReadDeadline(deadline)
	}
	answered := 0
	for _, s := range open {
		s.Write(wire.AppendHave(nil, []chunk.ID{chunk.Sum([]byte("x"))}))
	}
	for _, s := range open {
		if _, err := wire.NewReader(s, 0).Expect(wire.TypeHaveAck); err == nil {
			answered++
		}
	}
	t.Logf("of 40 have streams: %d refused at open, %d opened, %d answered", refused, len(open), answered)
	if answered == 0 || answered > 16 || refused+len(open)-answered < 40-16 {
		t.Fatalf("of 40 streams, %d refused at open and %d answered: the per-peer limit (16) did not hold", refused, answered)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := honest.Have(ctx, victim.ID(), []chunk.ID{chunk.Sum([]byte("y"))}); err != nil {
		t.Fatalf("an honest peer's have during the flood: %v", err)
	}
}

// A peer flooding have requests on many streams, far beyond its request
// rate, is throttled, then refused and banned; an honest peer's requests
// are answered meanwhile (its rate is its own).
func TestRequestFloodBanned(t *testing.T) {
	if testing.Short() {
		t.Skip("floods for 15 s (three offences of 5 s each) before the ban")
	}
	nodes := newTestNodes(t, 3, func(_ int, c *Config) { c.RequestRate = 50_000 })
	flooder, victim, honest := nodes[0], nodes[1], nodes[2]
	connect(t, flooder, victim)
	connect(t, honest, victim)
	ids := make([]chunk.ID, wire.MaxBatch)
	for i := range ids {
		ids[i] = chunk.Sum([]byte{byte(i), byte(i >> 8)})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var answered, failed atomic.Int64
	floodStart := time.Now()
	for range 12 { // 12 streams × 4096 IDs in flight: ~1 s of the rate each round
		wg.Go(func() {
			for range 100 {
				if ctx.Err() != nil || !victim.Admitted(flooder.ID()) {
					return
				}
				if _, err := flooder.Have(ctx, victim.ID(), ids); err != nil {
					failed.Add(1)
				} else {
					answered.Add(1)
				}
			}
		})
	}
	time.Sleep(500 * time.Millisecond) // the flood is on
	hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
	start := time.Now()
	_, err := honest.Have(hctx, victim.ID(), ids)
	hcancel()
	if err != nil {
		t.Fatalf("an honest peer's have during the flood: %v", err)
	}
	t.Logf("honest have of %d IDs answered in %v during the flood", len(ids), time.Since(start).Round(time.Millisecond))
	for victim.Admitted(flooder.ID()) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := time.Since(floodStart)
	cancel()
	wg.Wait()
	rate := float64(answered.Load()*int64(len(ids))) / elapsed.Seconds()
	t.Logf("flooder: %d requests answered (%.0f IDs/s), %d refused or cut; banned after %v",
		answered.Load(), rate, failed.Load(), elapsed.Round(time.Millisecond))
	if victim.Admitted(flooder.ID()) {
		t.Fatal("the flooder is still admitted")
	}
	// The burst (a quarter second) and one round of 12 requests in
	// flight come on top of the rate.
	if limit := 50_000*elapsed.Seconds() + 12_500 + 12*float64(len(ids)); float64(answered.Load()*int64(len(ids))) > limit {
		t.Fatalf("%d flood requests of %d IDs answered in %v: the rate of 50,000/s did not hold", answered.Load(), len(ids), elapsed)
	}
	if _, err := honest.Have(t.Context(), victim.ID(), ids[:1]); err != nil {
		t.Fatalf("an honest peer's have after the ban: %v", err)
	}
}

// testHold is what the tests' pushes say they are for: a put, kept until
// removed.
var testHold = wire.Hold{Kind: wire.HoldPut, IDs: []wire.MigrationID{{1}}}

// controlStream opens a /sg/migrate control stream from src to dst and
// sends frames one by one, each answered by an Ack (whatever its status);
// the stream stays open for the caller.
func controlStream(t *testing.T, src, dst testNode, frames ...[]byte) (network.Stream, *wire.Reader) {
	t.Helper()
	s, err := src.Host().NewStream(t.Context(), dst.ID(), ProtoMigrate)
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
