package node

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/wire"
)

// These tests play a pusher that tries to keep chunks past its hold, to
// extend its own lease, or to delete chunks it did not bring, in raw
// frames against real nodes.

// A pusher that names itself the destination, releases its own hold and
// keeps pushing on the same stream gets the stream ended: nothing pushed
// after the release is stored or pinned.
func TestHostilePushAfterOwnReleasePinsNothing(t *testing.T) {
	nodes := newTestNodes(t, 2, nil)
	attacker, relay := nodes[0], nodes[1]
	connect(t, attacker, relay)
	serveRoles(t, relay)
	mig := randomMigrationID()
	s, err := attacker.Host().NewStream(t.Context(), relay.ID(), ProtoPush)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rd := wire.NewReader(s, 0)
	before, after := randomChunks(4, 4096), randomChunks(4, 4096)
	if _, err := s.Write(append(wire.AppendHold(nil, migrationHold(attacker, mig)), wire.AppendPush(nil, before)...)); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.Expect(wire.TypePushAck); err != nil {
		t.Fatal(err)
	}
	if n := countHeld(relay.store, before); n != 4 {
		t.Fatalf("the relay stored %d of 4 chunks before the release", n)
	}
	rawMigrate(t, attacker, relay, wire.AppendRelease(nil, wire.Release{ID: mig, Chunks: ids(before)}))
	if n := countHeld(relay.store, before); n != 0 {
		t.Fatalf("the release left %d of the hold's 4 chunks", n)
	}
	if _, err := s.Write(wire.AppendPush(nil, after)); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.Expect(wire.TypePushAck); err == nil {
		t.Fatal("a push on a released hold's stream was acknowledged")
	}
	for _, c := range after {
		if relay.store.Pinned(c.ID) || relay.store.Has(c.ID) {
			t.Fatal("a chunk pushed after its hold ended was kept")
		}
	}
	if n := relay.holds.count(); n != 0 {
		t.Fatalf("%d holds open after the release", n)
	}
}

// Re-opening a push stream for a migration's hold does not extend its
// lease: the pusher's chunks go when the lease runs out, however often it
// re-opens the hold.
func TestHostilePusherCannotRenewItsLease(t *testing.T) {
	const lease = 400 * time.Millisecond
	nodes := newTestNodes(t, 3, func(i int, c *Config) { c.HoldLease = lease })
	pusher, dest, relay := nodes[0], nodes[1], nodes[2]
	connect(t, pusher, relay)
	h := migrationHold(dest, randomMigrationID())
	chunks := randomChunks(4, 4096)
	pushAllFor(t, pusher, relay, h, chunks)
	deadline := time.Now().Add(lease + time.Second + 3*lease)
	for time.Now().Before(deadline) {
		if countHeld(relay.store, chunks) == 0 {
			return
		}
		if _, err := tryPushFor(t, pusher, relay, h, nil); err != nil { // re-open the hold
			t.Fatal(err)
		}
		time.Sleep(lease / 8)
	}
	t.Fatalf("re-opening the hold kept its %d chunks past the lease", countHeld(relay.store, chunks))
}

// A pusher cannot delete a chunk that was in the store before its hold:
// pushing its bytes under its own hold and releasing leaves it stored.
// A chunk its hold brought is deleted by the same release.
func TestHostileReleaseKeepsChunksTheHoldDidNotBring(t *testing.T) {
	nodes := newTestNodes(t, 2, nil)
	attacker, relay := nodes[0], nodes[1]
	connect(t, attacker, relay)
	serveRoles(t, relay)
	victim, own := randomChunks(4, 4096), randomChunks(4, 4096)
	for _, c := range victim { // needed here but unpinned (a Have answered yes, a kept gather)
		if err := relay.store.Put(c.ID, c.Data); err != nil {
			t.Fatal(err)
		}
	}
	mig := randomMigrationID()
	pushAllFor(t, attacker, relay, migrationHold(attacker, mig), append(append([]wire.Chunk{}, victim...), own...))
	rawMigrate(t, attacker, relay, wire.AppendRelease(nil, wire.Release{ID: mig}))
	if n := countHeld(relay.store, victim); n != 4 {
		t.Fatalf("the release deleted %d of 4 chunks that were there before the hold", 4-n)
	}
	if n := countHeld(relay.store, own); n != 0 {
		t.Fatalf("the release kept %d of the 4 chunks its hold brought", n)
	}
}

// openMigration opens migration o from src at dest (which serves roles)
// and keeps its control stream open until the test ends.
func openMigration(t *testing.T, src, dest testNode, o wire.Open) {
	t.Helper()
	s, err := src.Host().NewStream(t.Context(), dest.ID(), ProtoMigrate)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Reset() })
	if _, err := s.Write(wire.AppendOpen(nil, o)); err != nil {
		t.Fatal(err)
	}
	if p, err := wire.NewReader(s, 0).Expect(wire.TypeAck); err != nil {
		t.Fatal(err)
	} else if st, msg, _ := wire.DecodeAck(p); st != wire.StatusOK {
		t.Fatalf("open refused: %s", msg)
	}
}

// pushCount pushes chunks from a to b for h in batches of 16 and counts
// the OK and Full answers; any other answer fails the test.
func pushCount(t *testing.T, a, b testNode, h wire.Hold, chunks []wire.Chunk) (ok, full int) {
	t.Helper()
	for i := 0; i < len(chunks); i += 16 {
		st, err := tryPushFor(t, a, b, h, chunks[i:min(len(chunks), i+16)])
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range st {
			switch s {
			case wire.StatusOK:
				ok++
			case wire.StatusFull:
				full++
			default:
				t.Fatalf("push: %v", s)
			}
		}
	}
	return ok, full
}

// A source that opened a 4 KiB migration to a node cannot push without
// bound under it: beyond what the Open's chunks may cost (its bytes and
// two entries a position) its pushes count against its quota and are
// refused once that is spent. A hold naming only migrations it did not
// open is not exempt at all; one naming one it did beside others is
// exempt within that one's budget only.
func TestHostileSmallOpenDoesNotLiftTheQuota(t *testing.T) {
	const budget, size = 4 << 20, 64 << 10
	nodes := newTestNodesWithStore(t, 2, chunkstore.Config{MemoryBudget: budget}, nil)
	src, dest := nodes[0], nodes[1]
	connect(t, src, dest)
	serveRoles(t, dest)
	mig := randomMigrationID()
	openMigration(t, src, dest, wire.Open{ID: mig, VM: "tiny",
		Regions: []wire.RegionInfo{{Name: "mem", Size: 4096, ChunkSize: 4096}}})

	unopened := migrationHold(dest, randomMigrationID(), randomMigrationID())
	if ok, _ := pushCount(t, src, dest, unopened, randomChunks(1, 4096)); dest.quota.usedBy(src.ID()) == 0 || ok != 1 {
		t.Fatalf("a hold naming only unopened migrations was exempt from the quota (ok %d)", ok)
	}
	charged := dest.quota.usedBy(src.ID())
	mixed := migrationHold(dest, mig, randomMigrationID())
	if ok, _ := pushCount(t, src, dest, mixed, randomChunks(1, 4096)); dest.quota.usedBy(src.ID()) != charged || ok != 1 {
		t.Fatalf("a 4 KiB chunk under a hold naming the open 4 KiB migration was charged to the quota (%d -> %d, ok %d)",
			charged, dest.quota.usedBy(src.ID()), ok)
	}
	ok, full := pushCount(t, src, dest, migrationHold(dest, mig), randomChunks(48, size)) // 3 MiB
	if want := (int(DefaultPushQuotaShare*budget) - int(charged)) / (size + 2*chunkOverhead); ok != want || full != 48-want {
		t.Fatalf("under a 4 KiB migration's hold the source stored %d of 48 chunks (refused %d), want its quota's %d", ok, full, want)
	}
}

// A peer cannot grow the node's maps without bound: 1-byte chunks cost
// their entries against its quota, and so does holding a chunk that is
// already here under one hold after another; ending the holds gives the
// entries back.
func TestHostileTinyChunksAndReholdsCountAgainstTheQuota(t *testing.T) {
	const quota = 64 << 10
	nodes := newTestNodes(t, 2, func(i int, c *Config) { c.PushQuota = quota })
	attacker, relay := nodes[0], nodes[1]
	connect(t, attacker, relay)
	serveRoles(t, relay)
	tiny := make([]wire.Chunk, 256) // every 1-byte chunk there is
	for i := range tiny {
		d := []byte{byte(i)}
		tiny[i] = wire.Chunk{ID: chunk.Sum(d), Data: d}
	}
	put := wire.Hold{Kind: wire.HoldPut, IDs: []wire.MigrationID{randomMigrationID()}}
	ok, full := pushCount(t, attacker, relay, put, tiny)
	if want := quota / (1 + 2*chunkOverhead); ok != want || full != 256-want {
		t.Fatalf("1-byte chunks: %d stored, %d refused; want %d stored", ok, full, want)
	}
	rawMigrate(t, attacker, relay, wire.AppendRemove(nil, put.IDs[0]))
	if used := relay.quota.usedBy(attacker.ID()); used != 0 {
		t.Fatalf("after removing its put the attacker is still charged %d bytes", used)
	}

	present := randomChunks(1, 4096)
	if err := relay.store.Put(present[0].ID, present[0].Data); err != nil {
		t.Fatal(err)
	}
	var holds []wire.Hold
	reheld := 0
	for range 2 * quota / chunkOverhead {
		h := wire.Hold{Kind: wire.HoldPut, IDs: []wire.MigrationID{randomMigrationID()}}
		if ok, _ := pushCount(t, attacker, relay, h, present); ok == 1 {
			reheld++
			holds = append(holds, h)
		}
	}
	if want := quota / chunkOverhead; reheld != want {
		t.Fatalf("a chunk already here was held %d times, want the quota's %d", reheld, want)
	}
	for _, h := range holds {
		rawMigrate(t, attacker, relay, wire.AppendRemove(nil, h.IDs[0]))
	}
	if used := relay.quota.usedBy(attacker.ID()); used != 0 || !relay.store.Has(present[0].ID) {
		t.Fatalf("after removing its holds the attacker is charged %d bytes (chunk kept: %v)", used, relay.store.Has(present[0].ID))
	}
}

// One peer's holds together name at most maxHoldIDsPerPeer migrations:
// holds of wire.MaxHoldIDs IDs each are refused once that many are named,
// and another peer still opens its own.
func TestHostileHoldIDsBoundedPerPeer(t *testing.T) {
	nodes := newTestNodes(t, 3, nil)
	attacker, relay, honest := nodes[0], nodes[1], nodes[2]
	connect(t, attacker, relay)
	connect(t, honest, relay)
	bigHold := func() wire.Hold {
		ids := make([]wire.MigrationID, wire.MaxHoldIDs)
		for i := range ids {
			ids[i] = randomMigrationID()
		}
		return migrationHold(honest, ids...)
	}
	for i := range maxHoldIDsPerPeer / wire.MaxHoldIDs {
		if _, err := tryPushFor(t, attacker, relay, bigHold(), randomChunks(1, 64)); err != nil {
			t.Fatalf("hold %d within the bound: %v", i, err)
		}
	}
	if _, err := tryPushFor(t, attacker, relay, bigHold(), randomChunks(1, 64)); err == nil {
		t.Fatal("a hold beyond the peer's bound on named migrations was opened")
	}
	if _, err := tryPushFor(t, attacker, relay, migrationHold(honest, randomMigrationID()), randomChunks(1, 64)); err == nil {
		t.Fatal("a one-migration hold beyond the peer's bound was opened")
	}
	if n := relay.holds.count(); n != maxHoldIDsPerPeer/wire.MaxHoldIDs {
		t.Fatalf("%d holds open, want %d", n, maxHoldIDsPerPeer/wire.MaxHoldIDs)
	}
	pushAllFor(t, honest, relay, migrationHold(honest, randomMigrationID()), randomChunks(1, 64))
}

// A hold that ends is freed outside the holds' lock; a new stream may open
// the same hold meanwhile (the source pushes on after a lease ran out) and
// store chunks under it. The ended record's free must not touch them: each
// record keeps its chunks under a store key of its own.
func TestReopenedHoldKeepsWhatItsStreamStored(t *testing.T) {
	st, err := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	hs := newHolds(st, time.Hour, newPushQuota(0))
	newID := func() peer.ID {
		k, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		id, err := peer.IDFromPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	pusher, dest := newID(), newID()
	h := wire.Hold{Kind: wire.HoldMigration, IDs: []wire.MigrationID{randomMigrationID()}, Dest: dest.String()}
	openHold := func() *hold {
		r, err := hs.open(pusher, h)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	store := func(r *hold, c wire.Chunk) {
		if _, err := hs.keep(r, 0, c.ID); err != nil {
			t.Fatal(err)
		}
		if err := st.Put(c.ID, c.Data); err != nil {
			t.Fatal(err)
		}
	}
	cs := randomChunks(2, 4096)
	old := openHold()
	store(old, cs[0])
	// The hold ends (as release and expiry do: forgotten under the lock,
	// freed after it), and before its free runs a new stream opens it
	// again and stores both chunks.
	hs.mu.Lock()
	hs.forgetLocked(old)
	hs.mu.Unlock()
	renewed := openHold()
	if renewed == old {
		t.Fatal("the ended record was handed out again")
	}
	store(renewed, cs[0])
	store(renewed, cs[1])
	if _, err := hs.free([]*hold{old}, true); err != nil {
		t.Fatal(err)
	}
	for i, c := range cs {
		if !st.Has(c.ID) || !st.Pinned(c.ID) {
			t.Fatalf("chunk %d the new stream stored: present %v, pinned %v after the old record's free", i, st.Has(c.ID), st.Pinned(c.ID))
		}
	}
}
