package cluster

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/node"
	"github.com/sgrelay/sg/internal/testenv"
	"github.com/sgrelay/sg/internal/wire"
)

func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		testenv.Missing(t, "/proc/self/fd: %v", err)
	}
	return len(es)
}

// filesOpenUnder counts this process's descriptors open on files below
// dir: the gather's region files, whatever else opens and closes meanwhile.
func filesOpenUnder(t *testing.T, dir string) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		testenv.Missing(t, "/proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range es {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(target, dir+"/") {
			n++
		}
	}
	return n
}

// A source that opens migrations of many regions, places part of them
// and dies mid-scatter (its control stream reset) leaves nothing at the
// destination once the abandoned gathers are retired: no open migration,
// no descriptor, no pin; its partial files removed. Replaying the Open of
// a migration whose files are here is refused, not truncated.
func TestAbandonedMigrationsGiveEverythingBack(t *testing.T) {
	nodes := newTestNodes(t, 2, nil)
	src, dst := nodes[0], nodes[1]
	connect(t, src, dst)
	dir := t.TempDir()
	retired := make(chan wire.MigrationID, 8)
	var roles *Roles
	roles = Serve(t.Context(), dst.Node, dst.store, Config{Dir: dir,
		OnGatherDone: func(in *fetch.Incoming, g *fetch.Gatherer, _ fetch.Report, err error) {
			if errors.Is(err, fetch.ErrAbandoned) {
				roles.Retire(in.ID)
				_ = os.RemoveAll(filepath.Dir(g.Paths()[0]))
			}
			retired <- in.ID
		}})
	t.Cleanup(roles.Wait)
	base := openFDs(t)

	const regions, migrations = 64, 4
	var last wire.Open
	for m := range migrations {
		o := wire.Open{VM: fmt.Sprintf("vm%d", m)}
		rand.Read(o.ID[:])
		for r := range regions {
			o.Regions = append(o.Regions, wire.RegionInfo{Name: fmt.Sprintf("r%d", r), Size: 1 << 20, ChunkSize: 4096})
		}
		s, err := src.Host().NewStream(t.Context(), dst.ID(), node.ProtoMigrate)
		if err != nil {
			t.Fatal(err)
		}
		rd := wire.NewReader(s, 0)
		frames := [][]byte{wire.AppendOpen(nil, o),
			wire.AppendHolders(nil, []wire.Holder{{Index: 0, Peer: src.ID().String()}}),
			wire.AppendPlacements(nil, []wire.Placement{{Region: 3, Index: 7, ID: chunk.Sum([]byte("x")), Holders: 1}}, false)}
		for _, f := range frames {
			if _, err := s.Write(f); err != nil {
				t.Fatal(err)
			}
			if _, err := rd.Expect(wire.TypeAck); err != nil {
				t.Fatal(err)
			}
		}
		if got := roles.Incomings().Len(); got != 1 {
			t.Fatalf("%d migrations open during the scatter, want 1", got)
		}
		if n := filesOpenUnder(t, dir); n < regions {
			t.Fatalf("%d descriptors open on the gather's files during a gather of %d regions", n, regions)
		}
		s.Reset() // the source dies
		select {
		case id := <-retired:
			if id != o.ID {
				t.Fatalf("retired %v, want %v", id, o.ID)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the abandoned gather never ended")
		}
		last = o
	}
	if n := roles.Incomings().Len(); n != 0 {
		t.Fatalf("%d migrations still open after their sources died", n)
	}
	if g := roles.Gatherer(last.ID); g != nil {
		t.Fatal("a retired gather is still registered")
	}
	if dst.store.Pinned(chunk.Sum([]byte("x"))) {
		t.Fatal("a retired migration still pins its placed chunk")
	}
	if fds := openFDs(t); fds > base+2 {
		t.Fatalf("%d descriptors open after %d abandoned migrations, baseline %d", fds, migrations, base)
	}
	if c := roles.GatherCounts(); c["gathering"]+c["failed"]+c["complete"] != 0 {
		t.Fatalf("gauges still count gathers: %v", c)
	}

	// A replayed Open of a migration whose VM directory is here (as a
	// completed gather leaves it) is refused, and the files stay as they were.
	replay := last
	vmDir := filepath.Join(dir, replay.ID.String())
	if err := os.MkdirAll(vmDir, 0o700); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(vmDir, "r0.img")
	if err := os.WriteFile(keep, []byte("gathered"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := src.Host().NewStream(t.Context(), dst.ID(), node.ProtoMigrate)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	if _, err := s.Write(wire.AppendOpen(nil, replay)); err != nil {
		t.Fatal(err)
	}
	// A refusal is an error ack, then the stream is reset (which may
	// overtake the ack).
	if p, err := wire.NewReader(s, 0).Expect(wire.TypeAck); err == nil {
		if st, _, err := wire.DecodeAck(p); err != nil || st == wire.StatusOK {
			t.Fatalf("replayed Open answered %v, %v: want a refusal", st, err)
		}
	}
	if b, err := os.ReadFile(keep); err != nil || string(b) != "gathered" {
		t.Fatalf("the gathered file after a replayed Open: %q, %v", b, err)
	}
	if n := roles.Incomings().Len(); n != 0 {
		t.Fatalf("a refused Open left %d migrations open", n)
	}
}

// Once a gather is complete its files hold the VM: the destination's
// store does not keep a second copy of its chunks (unless another owner
// pins them), and a chunk pushed for a migration its source abandoned is
// dropped too. Measured from the store of a real node, fed raw frames.
func TestGatheredChunksLeaveTheStore(t *testing.T) {
	nodes := newTestNodes(t, 2, nil)
	src, dst := nodes[0], nodes[1]
	connect(t, src, dst)
	ended := make(chan error, 1)
	roles := Serve(t.Context(), dst.Node, dst.store, Config{Dir: t.TempDir(),
		OnGatherDone: func(_ *fetch.Incoming, _ *fetch.Gatherer, _ fetch.Report, err error) { ended <- err }})
	t.Cleanup(roles.Wait)

	for _, complete := range []bool{true, false} {
		cs := randomChunks(4, 4096)
		other := randomChunks(1, 4096)[0] // pinned by someone else: kept
		for _, c := range append(cs, other) {
			if err := dst.store.Put(c.ID, c.Data); err != nil {
				t.Fatal(err)
			}
		}
		dst.store.Pin("someone-else", other.ID)
		o := wire.Open{VM: "vm", Regions: []wire.RegionInfo{{Name: "mem", Size: 5 * 4096, ChunkSize: 4096}}}
		rand.Read(o.ID[:])
		var ps []wire.Placement
		for i, c := range append(cs, other) {
			ps = append(ps, wire.Placement{Region: 0, Index: uint64(i), ID: c.ID, Holders: 1})
		}
		s, rd := controlStream(t, src, dst, wire.AppendOpen(nil, o),
			wire.AppendHolders(nil, []wire.Holder{{Index: 0, Peer: dst.ID().String()}}),
			wire.AppendPlacements(nil, ps, false))
		var root chunk.ID
		if complete {
			// The source sends Done with build: the destination builds
			// the manifest from the placements.
			ids := make([]chunk.ID, len(ps))
			for i, p := range ps {
				ids[i] = p.ID
			}
			root = buildRoot(t, o, ids)
			if _, err := s.Write(wire.AppendDone(nil, root, true)); err != nil {
				t.Fatal(err)
			}
			if _, err := rd.Expect(wire.TypeAck); err != nil {
				t.Fatal(err)
			}
			s.Close()
		} else {
			s.Reset()
		}
		select {
		case err := <-ended:
			if complete && err != nil {
				t.Fatalf("gather: %v", err)
			}
			if !complete && !errors.Is(err, fetch.ErrAbandoned) {
				t.Fatalf("gather of a dead source: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the gather never ended")
		}
		for _, c := range cs {
			if dst.store.Has(c.ID) {
				t.Fatalf("complete=%v: chunk %s still in the destination's store", complete, c.ID.Short())
			}
		}
		if complete && dst.store.Has(root) {
			t.Fatal("the manifest built here stays in the store after the gather")
		}
		if !dst.store.Has(other.ID) {
			t.Fatalf("complete=%v: a chunk another owner pins was dropped", complete)
		}
		dst.store.Unpin("someone-else")
	}
}

// buildRoot is the root of o's manifest with ids in its one region, as
// the destination builds it from the placements.
func buildRoot(t *testing.T, o wire.Open, ids []chunk.ID) chunk.ID {
	t.Helper()
	r := o.Regions[0]
	root, _, err := manifest.BuildTree(o.VM, []manifest.Region{{Name: r.Name, Kind: manifest.Kind(r.Kind), Size: int64(r.Size), ChunkSize: int(r.ChunkSize)}}, [][]chunk.ID{ids})
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// While another migration is still gathering here, a complete gather's
// chunks stay in the store (that migration's source may have been told
// this node holds them, and place them later); they leave once the last
// running gather ends.
func TestGatheredChunksWaitForOtherMigrations(t *testing.T) {
	nodes := newTestNodes(t, 2, nil)
	src, dst := nodes[0], nodes[1]
	connect(t, src, dst)
	ended := make(chan error, 2)
	roles := Serve(t.Context(), dst.Node, dst.store, Config{Dir: t.TempDir(),
		OnGatherDone: func(_ *fetch.Incoming, _ *fetch.Gatherer, _ fetch.Report, err error) { ended <- err }})
	t.Cleanup(roles.Wait)
	open := func(cs []wire.Chunk) (wire.Open, []wire.Placement, *wire.Reader, network.Stream) {
		for _, c := range cs {
			if err := dst.store.Put(c.ID, c.Data); err != nil {
				t.Fatal(err)
			}
		}
		o := wire.Open{VM: "vm", Regions: []wire.RegionInfo{{Name: "mem", Size: uint64(len(cs)) * 4096, ChunkSize: 4096}}}
		rand.Read(o.ID[:])
		var ps []wire.Placement
		for i, c := range cs {
			ps = append(ps, wire.Placement{Region: 0, Index: uint64(i), ID: c.ID, Holders: 1})
		}
		s, rd := controlStream(t, src, dst, wire.AppendOpen(nil, o),
			wire.AppendHolders(nil, []wire.Holder{{Index: 0, Peer: dst.ID().String()}}),
			wire.AppendPlacements(nil, ps, false))
		return o, ps, rd, s
	}
	first, running := randomChunks(3, 4096), randomChunks(3, 4096)
	oa, psa, rda, sa := open(first)
	_, _, _, sb := open(running) // stays open: still gathering
	ids := make([]chunk.ID, len(psa))
	for i, p := range psa {
		ids[i] = p.ID
	}
	if _, err := sa.Write(wire.AppendDone(nil, buildRoot(t, oa, ids), true)); err != nil {
		t.Fatal(err)
	}
	if _, err := rda.Expect(wire.TypeAck); err != nil {
		t.Fatal(err)
	}
	sa.Close()
	if err := <-ended; err != nil {
		t.Fatalf("first gather: %v", err)
	}
	for _, c := range first {
		if !dst.store.Has(c.ID) {
			t.Fatal("a chunk left the store while another migration was still gathering here")
		}
	}
	sb.Reset() // the second source dies: the last running gather ends
	if err := <-ended; !errors.Is(err, fetch.ErrAbandoned) {
		t.Fatalf("second gather: %v", err)
	}
	for _, c := range append(first, running...) {
		if dst.store.Has(c.ID) {
			t.Fatalf("chunk %s still in the store once no gather runs", c.ID.Short())
		}
	}
}
