package cluster

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/sgrelay/sg/internal/eviction"
	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/node"
	"github.com/sgrelay/sg/internal/wire"
)

// A demand read from a peer that is not the migration's destination is
// refused; the destination's is served.
func TestHostileDemandFromNonDestinationRefused(t *testing.T) {
	nodes := newTestNodes(t, 3, nil)
	src, dest, outsider := nodes[0], nodes[1], nodes[2]
	connect(t, dest, src)
	connect(t, outsider, src)
	roles := Serve(t.Context(), src.Node, src.store, Config{Dir: t.TempDir()})
	t.Cleanup(roles.Wait)

	memory := make([]byte, 64<<10)
	rand.Read(memory)
	vm := eviction.VM{Name: "guest", Regions: []eviction.Region{{Name: "ram", Kind: manifest.KindMemory, Size: int64(len(memory)), ChunkSize: 4096, Data: bytes.NewReader(memory)}}}
	e, err := eviction.New(NewNet(src.Node), []eviction.VM{vm}, eviction.DefaultConfig(dest.ID().String()))
	if err != nil {
		t.Fatal(err)
	}
	stop := roles.Evicting(e)
	defer stop()
	d := wire.DemandReq{ID: e.MigrationIDs()[0], Region: 0, Index: 3}

	read := func(who testNode) (wire.Status, []byte) {
		s, err := who.Host().NewStream(t.Context(), src.ID(), node.ProtoMigrate)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.Write(wire.AppendDemand(nil, d)); err != nil {
			t.Fatal(err)
		}
		p, err := wire.NewReader(s, 0).Expect(wire.TypeDemandAck)
		if err != nil {
			t.Fatal(err)
		}
		st, data, err := wire.DecodeDemandAck(p)
		if err != nil {
			t.Fatal(err)
		}
		return st, data
	}
	if st, data := read(outsider); st != wire.StatusRefused || len(data) != 0 {
		t.Fatalf("an outsider's demand read: %v with %d bytes, want refused", st, len(data))
	}
	if st, data := read(dest); st != wire.StatusOK || !bytes.Equal(data, memory[3*4096:4*4096]) {
		t.Fatalf("the destination's demand read: %v with %d bytes", st, len(data))
	}
}

// A source that dies mid-scatter leaves its chunks on the relays it named;
// the destination, the one peer that may free them, releases them when it
// gives the migration up, long before their lease would end. What the
// relay holds for another migration stays.
func TestAbandonedMigrationReleasedAtItsHolders(t *testing.T) {
	src, dest, relay := relayCluster(t) // a 24 h lease
	gatherEnded := make(chan error, 1)
	roles := Serve(t.Context(), dest.Node, dest.store, Config{Dir: t.TempDir(),
		OnGatherDone: func(_ *fetch.Incoming, _ *fetch.Gatherer, _ fetch.Report, err error) { gatherEnded <- err }})
	t.Cleanup(roles.Wait)

	o := wire.Open{ID: randomMigrationID(), VM: "web1",
		Regions: []wire.RegionInfo{{Name: "mem", Size: 64 * 4096, ChunkSize: 4096}}}
	other := randomMigrationID()
	mine, theirs := randomChunks(32, 4096), randomChunks(16, 4096)
	pushAllFor(t, src, relay, migrationHold(dest, o.ID), mine)
	pushAllFor(t, src, relay, migrationHold(dest, other), theirs)

	var ps []wire.Placement
	for i, c := range mine {
		ps = append(ps, wire.Placement{Region: 0, Index: uint64(i), ID: c.ID, Holders: 1})
	}
	s, _ := controlStream(t, src, dest, wire.AppendOpen(nil, o),
		wire.AppendHolders(nil, []wire.Holder{{Index: 0, Peer: relay.ID().String()}}),
		wire.AppendPlacements(nil, ps, false))
	s.Reset() // the source dies before it hands over the manifest
	select {
	case err := <-gatherEnded:
		if !errors.Is(err, fetch.ErrAbandoned) {
			t.Fatalf("gather ended with %v, want ErrAbandoned", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the abandoned gather never ended")
	}
	if n := countHeld(relay.store, mine); n != 0 {
		t.Fatalf("the relay keeps %d of the abandoned migration's 32 chunks", n)
	}
	if n := countHeld(relay.store, theirs); n != 16 {
		t.Fatalf("the relay keeps %d of another migration's 16 chunks", n)
	}
}
