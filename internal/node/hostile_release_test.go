package node

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/wire"
)

// These tests play peers that try to free, keep or read what is not
// theirs, in raw frames against real nodes.

func migrationHold(dest testNode, ids ...wire.MigrationID) wire.Hold {
	return wire.Hold{Kind: wire.HoldMigration, IDs: ids, Dest: dest.ID().String()}
}

func randomMigrationID() wire.MigrationID {
	var id wire.MigrationID
	rand.Read(id[:])
	return id
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

// rawMigrate sends one frame on /sg/migrate from a to b and returns the
// Ack's status.
func rawMigrate(t *testing.T, a, b testNode, frame []byte) wire.Status {
	t.Helper()
	s, err := a.Host().NewStream(t.Context(), b.ID(), ProtoMigrate)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Write(frame); err != nil {
		t.Fatal(err)
	}
	p, err := wire.NewReader(s, 0).Expect(wire.TypeAck)
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := wire.DecodeAck(p)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func ids(chunks []wire.Chunk) []chunk.ID {
	out := make([]chunk.ID, len(chunks))
	for i := range chunks {
		out[i] = chunks[i].ID
	}
	return out
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

// hostileCluster is a source, a destination, a relay taking releases and an
// uninvolved admitted peer.
func hostileCluster(t *testing.T, tweakRelay func(*Config)) (src, dest, relay, outsider testNode) {
	nodes := newTestNodes(t, 4, func(i int, c *Config) {
		if i == 2 && tweakRelay != nil {
			tweakRelay(c)
		}
	})
	src, dest, relay, outsider = nodes[0], nodes[1], nodes[2], nodes[3]
	for _, n := range []testNode{src, dest, outsider} {
		connect(t, n, relay)
	}
	connect(t, dest, src)
	connect(t, outsider, src)
	serveRoles(t, relay)
	return src, dest, relay, outsider
}

// A release with a random migration ID, from an uninvolved peer or even
// from the destination, frees nothing: the relay keeps its 64 chunks.
func TestHostileReleaseRandomIDFreesNothing(t *testing.T) {
	src, dest, relay, outsider := hostileCluster(t, nil)
	mig := randomMigrationID()
	chunks := randomChunks(64, 4096)
	pushAllFor(t, src, relay, migrationHold(dest, mig), chunks)

	for _, who := range []testNode{outsider, dest, src} {
		rel := wire.AppendRelease(nil, wire.Release{ID: randomMigrationID(), Chunks: ids(chunks)})
		if st := rawMigrate(t, who, relay, rel); st != wire.StatusOK {
			t.Fatalf("release answered %v", st)
		}
		if n := countHeld(relay.store, chunks); n != 64 {
			t.Fatalf("after a release with a random ID the relay holds %d of 64 chunks", n)
		}
	}
	// The destination's release of the real migration frees them: the
	// check above could fail.
	rawMigrate(t, dest, relay, wire.AppendRelease(nil, wire.Release{ID: mig, Chunks: ids(chunks)}))
	if n := countHeld(relay.store, chunks); n != 0 {
		t.Fatalf("after its destination's release the relay still holds %d chunks", n)
	}
}

// A release of the real migration from anyone but its destination (an
// uninvolved peer, the source) frees nothing, nor does a renewal or a
// remove from them.
func TestHostileReleaseFromNonDestinationFreesNothing(t *testing.T) {
	src, dest, relay, outsider := hostileCluster(t, nil)
	mig := randomMigrationID()
	chunks := randomChunks(64, 4096)
	pushAllFor(t, src, relay, migrationHold(dest, mig), chunks)

	for _, who := range []testNode{outsider, src} {
		rawMigrate(t, who, relay, wire.AppendRelease(nil, wire.Release{ID: mig, Chunks: ids(chunks)}))
		if st := rawMigrate(t, who, relay, wire.AppendRemove(nil, mig)); st == wire.StatusOK {
			t.Fatal("a remove of a migration's hold was acknowledged")
		}
		if n := countHeld(relay.store, chunks); n != 64 {
			t.Fatalf("after a release by %s the relay holds %d of 64 chunks", who.ID(), n)
		}
	}
	// An outsider's hold naming the same migration and destination is its
	// own: it does not make the outsider's release count.
	pushAllFor(t, outsider, relay, migrationHold(outsider, mig), randomChunks(1, 4096))
	rawMigrate(t, outsider, relay, wire.AppendRelease(nil, wire.Release{ID: mig, Chunks: ids(chunks)}))
	if n := countHeld(relay.store, chunks); n != 64 {
		t.Fatalf("after the outsider's own hold and release the relay holds %d of 64 chunks", n)
	}
	rawMigrate(t, dest, relay, wire.AppendRelease(nil, wire.Release{ID: mig}))
	if n := countHeld(relay.store, chunks); n != 0 {
		t.Fatalf("after its destination's release the relay still holds %d chunks", n)
	}
}

// Two migrations share chunks on one relay: the first one's release frees
// only what the second does not hold; the second's frees the rest.
func TestHostileSharedChunksSurviveFirstRelease(t *testing.T) {
	src, dest, relay, outsider := hostileCluster(t, nil)
	m1, m2 := randomMigrationID(), randomMigrationID()
	shared, only1, only2 := randomChunks(32, 4096), randomChunks(32, 4096), randomChunks(32, 4096)
	pushAllFor(t, src, relay, migrationHold(dest, m1), append(append([]wire.Chunk{}, shared...), only1...))
	// The second migration goes elsewhere, from another source.
	pushAllFor(t, outsider, relay, migrationHold(src, m2), append(append([]wire.Chunk{}, shared...), only2...))

	all1 := append(append([]wire.Chunk{}, shared...), only1...)
	rawMigrate(t, dest, relay, wire.AppendRelease(nil, wire.Release{ID: m1, Chunks: ids(all1)}))
	if n := countHeld(relay.store, only1); n != 0 {
		t.Fatalf("the first migration's own chunks: %d of 32 left", n)
	}
	if n := countHeld(relay.store, shared) + countHeld(relay.store, only2); n != 64 {
		t.Fatalf("the second migration's chunks after the first's release: %d of 64 left", n)
	}
	rawMigrate(t, src, relay, wire.AppendRelease(nil, wire.Release{ID: m2}))
	if n := countHeld(relay.store, shared) + countHeld(relay.store, only2); n != 0 {
		t.Fatalf("after both releases %d chunks are left", n)
	}
}

// A migration that never completes is freed after its lease; one its
// destination renews is kept, and a renewal from anyone else does not
// count.
func TestHostileLeaseFreesAbandonedMigration(t *testing.T) {
	const lease = 400 * time.Millisecond
	src, dest, relay, outsider := hostileCluster(t, func(c *Config) { c.HoldLease = lease })
	abandoned, renewed, renewedByOutsider := randomMigrationID(), randomMigrationID(), randomMigrationID()
	ca, cr, co := randomChunks(16, 4096), randomChunks(16, 4096), randomChunks(16, 4096)
	pushAllFor(t, src, relay, migrationHold(dest, abandoned), ca)
	pushAllFor(t, src, relay, migrationHold(dest, renewed), cr)
	pushAllFor(t, src, relay, migrationHold(dest, renewedByOutsider), co)

	deadline := time.Now().Add(5 * lease)
	for time.Now().Before(deadline) {
		if st := rawMigrate(t, dest, relay, wire.AppendRenew(nil, renewed)); st != wire.StatusOK {
			t.Fatalf("renewal answered %v", st)
		}
		rawMigrate(t, outsider, relay, wire.AppendRenew(nil, renewedByOutsider))
		time.Sleep(lease / 8)
	}
	if n := countHeld(relay.store, ca); n != 0 {
		t.Fatalf("an abandoned migration's chunks after 5 leases: %d of 16 left", n)
	}
	if n := countHeld(relay.store, co); n != 0 {
		t.Fatalf("chunks renewed only by an outsider after 5 leases: %d of 16 left", n)
	}
	if n := countHeld(relay.store, cr); n != 16 {
		t.Fatalf("a renewed migration's chunks: %d of 16 left", n)
	}
}

// A put's copies are kept whatever migration is released, even one
// naming the put's ID, and whoever asks; only their pusher removes them.
// A put made with an expiry goes at its expiry.
func TestHostilePutSurvivesReleaseAndGoesWithRemove(t *testing.T) {
	const lease = 400 * time.Millisecond
	src, dest, relay, outsider := hostileCluster(t, func(c *Config) { c.HoldLease = lease })
	put := randomMigrationID()
	kept := randomChunks(32, 4096)
	pushAllFor(t, src, relay, wire.Hold{Kind: wire.HoldPut, IDs: []wire.MigrationID{put}}, kept)
	// A migration to dest shares half the put's chunks, and is released.
	mig := randomMigrationID()
	pushAllFor(t, outsider, relay, migrationHold(dest, mig), kept[:16])
	rawMigrate(t, dest, relay, wire.AppendRelease(nil, wire.Release{ID: mig, Chunks: ids(kept)}))
	for _, who := range []testNode{dest, outsider, src} {
		rawMigrate(t, who, relay, wire.AppendRelease(nil, wire.Release{ID: put, Chunks: ids(kept)}))
	}
	if st := rawMigrate(t, outsider, relay, wire.AppendRemove(nil, put)); st == wire.StatusOK {
		t.Fatal("an outsider's remove of the put was acknowledged")
	}
	time.Sleep(3 * lease) // past any lease: a put has none
	if n := countHeld(relay.store, kept); n != 32 {
		t.Fatalf("after releases and a stranger's remove the put has %d of 32 chunks", n)
	}
	if st := rawMigrate(t, src, relay, wire.AppendRemove(nil, put)); st != wire.StatusOK {
		t.Fatalf("the putter's remove answered %v", st)
	}
	if n := countHeld(relay.store, kept); n != 0 {
		t.Fatalf("after the putter's remove %d chunks are left", n)
	}

	expiring := randomChunks(8, 4096)
	pushAllFor(t, src, relay, wire.Hold{Kind: wire.HoldPut, IDs: []wire.MigrationID{randomMigrationID()}, Expire: time.Second}, expiring)
	if n := countHeld(relay.store, expiring); n != 8 {
		t.Fatalf("a put with an expiry, at once: %d of 8 chunks", n)
	}
	time.Sleep(time.Second + 3*lease)
	if n := countHeld(relay.store, expiring); n != 0 {
		t.Fatalf("a put past its expiry: %d of 8 chunks left", n)
	}
}

// With the default configuration a flooding peer is refused ("full") once
// its pushes take its share of the store, and another peer still gets in.
func TestHostilePushQuotaOnByDefault(t *testing.T) {
	const budget = 4 << 20
	nodes := newTestNodesWithStore(t, 3, chunkstore.Config{MemoryBudget: budget}, nil)
	flooder, relay, honest := nodes[0], nodes[1], nodes[2]
	connect(t, flooder, relay)
	connect(t, honest, relay)
	h := wire.Hold{Kind: wire.HoldPut, IDs: []wire.MigrationID{randomMigrationID()}}
	const size = 64 << 10
	stored, full := 0, 0
	for range budget / size / 16 {
		st, err := tryPushFor(t, flooder, relay, h, randomChunks(16, size))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range st {
			switch s {
			case wire.StatusOK:
				stored++
			case wire.StatusFull:
				full++
			default:
				t.Fatalf("flood push: %v", s)
			}
		}
	}
	// Each new chunk costs its bytes, its store entry and its hold entry.
	if want := int(DefaultPushQuotaShare*budget) / (size + 2*chunkOverhead); stored != want || full == 0 {
		t.Fatalf("the flooder stored %d chunks (want its share, %d) and was refused %d", stored, want, full)
	}
	for i, s := range pushOnce(t, honest, relay, randomChunks(8, size)) {
		if s != wire.StatusOK {
			t.Fatalf("the honest peer's chunk %d after the flood: %v", i, s)
		}
	}
	// Naming the relay as the destination of a migration it never opened
	// does not lift the quota.
	st, err := tryPushFor(t, flooder, relay, migrationHold(relay, randomMigrationID()), randomChunks(4, size))
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range st {
		if s != wire.StatusFull {
			t.Fatalf("a push claiming a migration to the relay, chunk %d: %v, want full", i, s)
		}
	}
}

// A destination takes a migration opened to it beyond the opener's push
// quota (the quota protects relays; the VM is the destination's to take).
func TestDestinationTakesItsMigrationBeyondTheQuota(t *testing.T) {
	const budget = 4 << 20
	nodes := newTestNodesWithStore(t, 2, chunkstore.Config{MemoryBudget: budget}, nil)
	src, dest := nodes[0], nodes[1]
	connect(t, src, dest)
	serveRoles(t, dest)
	mig := randomMigrationID()
	s, err := src.Host().NewStream(t.Context(), dest.ID(), ProtoMigrate)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	open := wire.Open{ID: mig, VM: "guest", Regions: []wire.RegionInfo{{Name: "mem", Kind: 1, Size: 3 << 20, ChunkSize: 64 << 10}}}
	if _, err := s.Write(wire.AppendOpen(nil, open)); err != nil {
		t.Fatal(err)
	}
	if p, err := wire.NewReader(s, 0).Expect(wire.TypeAck); err != nil {
		t.Fatal(err)
	} else if st, msg, _ := wire.DecodeAck(p); st != wire.StatusOK {
		t.Fatalf("open refused: %s", msg)
	}
	chunks := randomChunks(48, 64<<10) // 3 MiB: over the 2 MiB share
	pushAllFor(t, src, dest, migrationHold(dest, mig), chunks)
	if n := countHeld(dest.store, chunks); n != 48 {
		t.Fatalf("the destination holds %d of its migration's 48 chunks", n)
	}
}
