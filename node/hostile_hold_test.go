package node

import (
	"testing"
	"time"

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

func serveRoles(t *testing.T, n testNode) {
	roles := n.ServeRoles(t.Context(), n.store, RolesConfig{Dir: t.TempDir()})
	t.Cleanup(roles.Wait)
}
