package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/node"
	"github.com/sgrelay/sg/internal/wire"
)

// rawOpen sends o as a raw Open frame from one node to another and
// returns the destination's answer.
func rawOpen(t *testing.T, from, to testNode, o wire.Open) (wire.Status, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := from.Host().NewStream(ctx, to.ID(), node.ProtoMigrate)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Write(wire.AppendOpen(nil, o)); err != nil {
		t.Fatal(err)
	}
	p, err := wire.NewReader(s, 0).Expect(wire.TypeAck)
	if err != nil {
		t.Fatalf("answer to the open: %v", err)
	}
	st, msg, err := wire.DecodeAck(p)
	if err != nil {
		t.Fatal(err)
	}
	return st, msg
}

func migrationID() wire.MigrationID {
	var id wire.MigrationID
	rand.Read(id[:])
	return id
}

// honestMigration migrates a two-chunk VM from src to dst through the
// node's own protocols (push, Open, Holders, Placements, Done with the
// manifest to build) and checks that dst gathers it byte for byte.
func honestMigration(t *testing.T, src, dst testNode, roles *Roles) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	chunks := randomChunks(2, 4096)
	for i, st := range pushOnce(t, src, dst, chunks) {
		if st != wire.StatusOK {
			t.Fatalf("honest push of chunk %d: %v", i, st)
		}
	}
	region := wire.RegionInfo{Name: "mem", Kind: uint8(manifest.KindMemory), Size: 8192, ChunkSize: 4096}
	o := wire.Open{ID: migrationID(), VM: "web1", Regions: []wire.RegionInfo{region}}
	ms, err := src.OpenMigration(ctx, dst.ID(), o)
	if err != nil {
		t.Fatalf("honest open: %v", err)
	}
	defer ms.Close()
	ids := []chunk.ID{chunks[0].ID, chunks[1].ID}
	must(t, ms.Holders(ctx, []wire.Holder{{Index: 0, Peer: dst.ID().String()}}))
	must(t, ms.Placements(ctx, []wire.Placement{{Index: 0, ID: ids[0], Holders: 1}, {Index: 1, ID: ids[1], Holders: 1}}))
	root, _, err := manifest.BuildTree(o.VM, []manifest.Region{{Name: "mem", Kind: manifest.KindMemory, Size: 8192, ChunkSize: 4096}}, [][]chunk.ID{ids})
	must(t, err)
	must(t, ms.Done(ctx, root, true))
	g := roles.Gatherer(o.ID)
	if g == nil {
		t.Fatal("no gather for the honest migration")
	}
	select {
	case <-g.Done():
	case <-ctx.Done():
		t.Fatal("the honest gather did not end")
	}
	if rep := g.Report(); !rep.Complete {
		t.Fatalf("honest gather: %+v", rep)
	}
	got, err := os.ReadFile(g.Paths()[0])
	must(t, err)
	if want := append(bytes.Clone(chunks[0].Data), chunks[1].Data...); !bytes.Equal(got, want) {
		t.Fatal("the honest VM's memory differs from what was sent")
	}
	if dir := filepath.Base(filepath.Dir(g.Paths()[0])); dir != o.ID.String() {
		t.Fatalf("gathered into %q, want the migration ID %s", dir, o.ID)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A source that names its VM ../../../escaped and a region /../../victim
// is refused at the Open, with the name in the message; no file outside
// the data directory is created or touched (the victim file keeps its
// bytes), nothing is created for it inside it, and an honest migration
// is gathered right after.
func TestHostileNamesRefused(t *testing.T) {
	nodes := newTestNodes(t, 3, nil)
	evil, dest, honest := nodes[0], nodes[1], nodes[2]
	connect(t, evil, dest)
	connect(t, honest, dest)
	top := t.TempDir()
	data := filepath.Join(top, "a", "b", "c", "data")
	vms := filepath.Join(data, "vms")
	must(t, os.MkdirAll(vms, 0o700))
	roles := Serve(t.Context(), dest.Node, dest.store, Config{Dir: vms})
	t.Cleanup(roles.Wait)

	// Where these names lead if joined into vms/<vm>-<id8>/<region>.img.
	victims := map[string][]byte{}
	for _, p := range []string{filepath.Join(top, "a", "victim.img"), filepath.Join(top, "victim.img"), filepath.Join(data, "victim.img")} {
		b := []byte("the victim's own bytes: " + p)
		must(t, os.WriteFile(p, b, 0o600))
		victims[p] = b
	}
	region := wire.RegionInfo{Name: "mem", Kind: uint8(manifest.KindMemory), Size: 8192, ChunkSize: 4096}
	bad := region
	bad.Name = "/../../victim"
	for _, o := range []wire.Open{
		{ID: migrationID(), VM: "../../../escaped", Regions: []wire.RegionInfo{bad}},
		{ID: migrationID(), VM: "../../../escaped", Regions: []wire.RegionInfo{region}},
		{ID: migrationID(), VM: "web1", Regions: []wire.RegionInfo{bad}},
		{ID: migrationID(), VM: "web1", Regions: []wire.RegionInfo{region, region}},
	} {
		st, msg := rawOpen(t, evil, dest, o)
		if st != wire.StatusRefused || !strings.Contains(msg, "name") {
			t.Fatalf("open of VM %q regions %q: %v %q, want refused naming the bad name", o.VM, o.Regions[0].Name, st, msg)
		}
		t.Logf("refused: %s", msg)
		if len(roles.Incomings().List()) != 0 {
			t.Fatal("a refused open was recorded")
		}
	}
	for p, b := range victims {
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("victim %s changed: %q, %v", p, got, err)
		}
	}
	must(t, filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), "escaped") {
			t.Errorf("%s was created", p)
		}
		return err
	}))
	if ents, err := os.ReadDir(vms); err != nil || len(ents) != 0 {
		t.Fatalf("the data directory holds %d entries after refused opens (%v)", len(ents), err)
	}
	honestMigration(t, honest, dest, roles)
}

// An Open of one region of 2^42 bytes (2^30 positions of 4 KiB), or
// larger than the node's free disk, is refused with a clear error before
// anything is allocated for it: the node's heap does not move, it stays
// up, and gathers an honest migration right after.
func TestHostileHugeOpenRefused(t *testing.T) {
	nodes := newTestNodes(t, 3, nil)
	evil, dest, honest := nodes[0], nodes[1], nodes[2]
	connect(t, evil, dest)
	connect(t, honest, dest)
	roles := Serve(t.Context(), dest.Node, dest.store, Config{Dir: t.TempDir()})
	t.Cleanup(roles.Wait)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	// 2^30 positions (over the positions cap); 2^22 positions of 1 MiB
	// (over the per-source bytes); and, within both, 1 GiB more than the
	// free disk where VMs are gathered.
	free, err := freeDisk(roles.cfg.Dir)
	must(t, err)
	for _, r := range []wire.RegionInfo{{Size: 1 << 42, ChunkSize: 4096}, {Size: 1 << 42, ChunkSize: 1 << 20}, {Size: uint64(free) + 1<<30, ChunkSize: 1 << 20}} {
		r.Name, r.Kind = "mem", uint8(manifest.KindMemory)
		o := wire.Open{ID: migrationID(), VM: "huge", Regions: []wire.RegionInfo{r}}
		st, msg := rawOpen(t, evil, dest, o)
		if st != wire.StatusRefused || !strings.Contains(msg, "too large") {
			t.Fatalf("open of %d bytes in %d-byte chunks: %v %q, want refused as too large", r.Size, r.ChunkSize, st, msg)
		}
		t.Logf("refused: %s", msg)
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Fatalf("refusing three huge opens allocated %d MiB", grew>>20)
	}
	if n := len(roles.Incomings().List()); n != 0 {
		t.Fatalf("%d refused opens recorded", n)
	}
	honestMigration(t, honest, dest, roles)
}

// 160 streams (push, get and migrate, each to its per-peer limit) each
// send a frame header that promises the largest frame its protocol takes
// (8 MiB for push and migrate), then 1 KiB, and wait. The victim's heap
// grows by what arrived (its buffers grow with the bytes), not by the
// promises (776 MiB), and an honest peer is served meanwhile.
func TestHostileFramePromisesDoNotHoldMemory(t *testing.T) {
	nodes := newTestNodes(t, 3, nil)
	evil, victim, honest := nodes[0], nodes[1], nodes[2]
	connect(t, evil, victim)
	connect(t, honest, victim)
	roles := Serve(t.Context(), victim.Node, victim.store, Config{Dir: t.TempDir()})
	t.Cleanup(roles.Wait)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	frame := make([]byte, 4+1+1<<10)
	var open []network.Stream
	defer func() {
		for _, s := range open {
			s.Reset()
		}
	}()
	for _, p := range []struct {
		proto protocol.ID
		n     int
		typ   wire.Type
	}{{node.ProtoPush, 64, wire.TypePush}, {node.ProtoGet, 64, wire.TypeGet}, {node.ProtoMigrate, 32, wire.TypeMigrateOpen}} {
		// The largest frame the protocol takes: 8 MiB for pushes and
		// migrate frames, a batch of IDs for gets.
		binary.BigEndian.PutUint32(frame, uint32(wire.MaxRequestFrame(p.typ)))
		frame[4] = byte(p.typ)
		for range p.n {
			s, err := evil.Host().NewStream(t.Context(), victim.ID(), p.proto)
			if err != nil {
				t.Fatalf("stream %d: %v", len(open), err)
			}
			s.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := s.Write(frame); err != nil {
				t.Fatalf("stream %d: %v", len(open), err)
			}
			open = append(open, s)
		}
	}
	// Let the victim read the headers and bytes of every stream.
	time.Sleep(time.Second)
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("%d streams promising up to %d MiB each: heap in use %d MiB -> %d MiB", len(open), wire.MaxFrameSize>>20, before.HeapInuse>>20, after.HeapInuse>>20)
	if grew > 64<<20 {
		t.Fatalf("the victim's heap grew by %d MiB for %d KiB received", grew>>20, len(open))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := honest.Have(ctx, victim.ID(), []chunk.ID{chunk.Sum([]byte("y"))}); err != nil {
		t.Fatalf("an honest peer's have during the flood: %v", err)
	}
	honestMigration(t, honest, victim, roles)
}
