package eviction

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/wire"
	"github.com/sgrelay/sg/internal/workload"
)

// fakeCluster is an in-process cluster: one memory store per peer. A peer
// can be made to fail its pushes after a number of batches (a killed
// relay), or to vanish after acknowledging (lost later).
type fakeCluster struct {
	mu        sync.Mutex
	stores    map[string]*chunkstore.Memory
	pushed    map[string]int64 // chunk bytes pushed to each peer, counted once per chunk sent
	failAfter map[string]int   // batches before the peer's pushes fail
	// blackHoleAfter: batches before the peer accepts pushes and never
	// answers (a crashed host whose connection is not yet known dead).
	blackHoleAfter map[string]int
	gone           map[string]bool // the peer no longer answers anything
	delay          map[string]time.Duration
	dieOnCheck     map[string]bool  // dies when asked for its capacity after having taken data
	claimsFree     map[string]int64 // reports this much free room, whatever its store holds (a disk filled by others)
	downlink       map[string]int64 // the bytes/s it says it can take in
	saysEmpty      map[string]bool  // reports a store with no chunk
	haveAsked      int              // chunk IDs asked about in have queries
	refuseBuild    bool             // destinations answer that they cannot build the manifest
	// slowAfter: batches before the peer's pushes take slowDelay each
	// (a target that slows down suddenly).
	slowAfter   map[string]int
	slowDelay   time.Duration
	refusedFull map[string]int // chunks a peer answered "full"
	sessions    []*fakeSession
	pushedByID  map[chunk.ID]int
	// pushLog: the IDs of each push every chunk of which was stored, by
	// digest, as a node remembers them (push placements name pushes).
	pushLog map[chunk.ID][]chunk.ID
}

func newFakeCluster(peers ...string) *fakeCluster {
	c := &fakeCluster{stores: map[string]*chunkstore.Memory{}, pushed: map[string]int64{},
		failAfter: map[string]int{}, blackHoleAfter: map[string]int{}, gone: map[string]bool{}, delay: map[string]time.Duration{}, dieOnCheck: map[string]bool{}, claimsFree: map[string]int64{}, downlink: map[string]int64{}, saysEmpty: map[string]bool{}, slowAfter: map[string]int{}, refusedFull: map[string]int{}, pushedByID: map[chunk.ID]int{}, pushLog: map[chunk.ID][]chunk.ID{}}
	for _, p := range peers {
		c.stores[p] = chunkstore.NewMemory(1 << 30)
	}
	return c
}

var errGone = errors.New("peer gone")

type fakePusher struct {
	c       *fakeCluster
	peer    string
	pending []func([]wire.Status, error) // pushes a black hole swallowed
}

func (c *fakeCluster) OpenPush(_ context.Context, p string, _ wire.Hold) (Pusher, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone[p] || c.stores[p] == nil {
		return nil, errGone
	}
	return &fakePusher{c: c, peer: p}, nil
}

func (f *fakePusher) Push(_ context.Context, cs []wire.Chunk, done func([]wire.Status, error)) error {
	f.c.mu.Lock()
	d := f.c.delay[f.peer]
	if n, ok := f.c.slowAfter[f.peer]; ok {
		if n <= 0 {
			d = f.c.slowDelay
		}
		f.c.slowAfter[f.peer] = n - 1
	}
	f.c.mu.Unlock()
	time.Sleep(d)
	f.c.mu.Lock()
	if n, ok := f.c.failAfter[f.peer]; ok {
		if n <= 0 {
			f.c.gone[f.peer] = true
		}
		f.c.failAfter[f.peer] = n - 1
	}
	if f.c.gone[f.peer] {
		f.c.mu.Unlock()
		done(nil, errGone)
		return nil
	}
	if n, ok := f.c.blackHoleAfter[f.peer]; ok && n <= 0 {
		// Accepted, never answered, until the stream is reset.
		f.pending = append(f.pending, done)
		f.c.mu.Unlock()
		return nil
	} else if ok {
		f.c.blackHoleAfter[f.peer] = n - 1
	}
	st := make([]wire.Status, len(cs))
	ids := make([]chunk.ID, len(cs))
	for i, ch := range cs {
		ids[i] = ch.ID
		if !chunk.Verify(ch.ID, ch.Data) {
			st[i] = wire.StatusBadHash
			continue
		}
		if err := f.c.stores[f.peer].Put(ch.ID, ch.Data); err != nil {
			st[i] = wire.StatusFull
			f.c.refusedFull[f.peer]++
			continue
		}
		f.c.pushed[f.peer] += int64(len(ch.Data))
		f.c.pushedByID[ch.ID]++
	}
	if !slices.ContainsFunc(st, func(s wire.Status) bool { return s != wire.StatusOK }) {
		f.c.pushLog[wire.IDsDigest(ids)] = ids
	}
	f.c.mu.Unlock()
	done(st, nil)
	return nil
}
func (f *fakePusher) Close() error { return nil }
func (f *fakePusher) Abort() {
	f.c.mu.Lock()
	pending := f.pending
	f.pending = nil
	f.c.mu.Unlock()
	for _, done := range pending {
		done(nil, errors.New("stream reset"))
	}
}

func (c *fakeCluster) Have(_ context.Context, p string, ids []chunk.ID) ([]bool, error) {
	c.mu.Lock()
	c.haveAsked += len(ids)
	c.mu.Unlock()
	out := make([]bool, len(ids))
	for i, id := range ids {
		out[i] = c.stores[p].Has(id)
	}
	return out, nil
}

func (c *fakeCluster) Capacity(ctx context.Context, p string) (Capacity, error) {
	free, err := c.freeCapacity(ctx, p)
	c.mu.Lock()
	defer c.mu.Unlock()
	cp := Capacity{Free: free, Downlink: c.downlink[p], Chunks: -1}
	if c.saysEmpty[p] {
		cp.Chunks = 0
	}
	return cp, err
}

func (c *fakeCluster) freeCapacity(_ context.Context, p string) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dieOnCheck[p] && c.pushed[p] > 0 {
		c.gone[p] = true
	}
	if c.gone[p] {
		return 0, errGone
	}
	if free, ok := c.claimsFree[p]; ok {
		return free, nil
	}
	return c.stores[p].Stats().Free(), nil
}

type fakeSession struct {
	c         *fakeCluster
	mu        sync.Mutex
	open      wire.Open
	holders   map[uint8]string
	placed    map[[2]uint64]wire.Placement // (region, index) → placement
	root      chunk.ID
	done      bool
	cancelled bool // the eviction gave the migration up
	dest      *chunkstore.Memory
	// built: the destination built the manifest from the placements;
	// refuseBuild makes it answer that it cannot.
	built, refuseBuild bool
	pushPlaced         int // pushes the source placed by digest
}

func (c *fakeCluster) OpenMigration(_ context.Context, dest string, o wire.Open) (Session, error) {
	c.mu.Lock()
	s := &fakeSession{c: c, open: o, holders: map[uint8]string{}, placed: map[[2]uint64]wire.Placement{}, dest: c.stores[dest], refuseBuild: c.refuseBuild}
	c.mu.Unlock()
	c.mu.Lock()
	c.sessions = append(c.sessions, s)
	c.mu.Unlock()
	return s, nil
}

func (s *fakeSession) Holders(_ context.Context, hs []wire.Holder) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range hs {
		s.holders[h.Index] = h.Peer
	}
	return nil
}

func (s *fakeSession) Placements(_ context.Context, ps []wire.Placement) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range ps {
		s.placed[[2]uint64{uint64(p.Region), p.Index}] = p
	}
	return nil
}

// PushPlacements resolves each push from the cluster's push log, as a
// destination asks the holder; an unknown push stays unplaced.
func (s *fakeSession) PushPlacements(_ context.Context, pps []wire.PushPlacement) error {
	for _, pp := range pps {
		s.c.mu.Lock()
		ids, ok := s.c.pushLog[pp.Digest]
		s.c.mu.Unlock()
		if !ok {
			continue
		}
		ps, err := pp.Placements(ids, nil)
		if err != nil {
			return err
		}
		if err := s.Placements(context.Background(), ps); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.pushPlaced += len(pps)
	s.mu.Unlock()
	return nil
}

func (s *fakeSession) Done(_ context.Context, root chunk.ID, build bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if build {
		// As a destination does: build the manifest from the placements
		// and keep it, if it hashes to root.
		regions := make([]manifest.Region, len(s.open.Regions))
		ids := make([][]chunk.ID, len(s.open.Regions))
		for i, r := range s.open.Regions {
			regions[i] = manifest.Region{Name: r.Name, Kind: manifest.Kind(r.Kind), Size: int64(r.Size), ChunkSize: int(r.ChunkSize)}
			ids[i] = make([]chunk.ID, regions[i].Chunks())
		}
		for at, p := range s.placed {
			ids[at[0]][at[1]] = p.ID
		}
		got, nodes, err := manifest.BuildTree(s.open.VM, regions, ids)
		if err != nil || got != root || s.refuseBuild {
			return ErrManifestNeeded
		}
		for _, n := range nodes {
			s.dest.Put(n.ID, n.Data)
		}
		s.built = true
	}
	s.root, s.done = root, true
	return nil
}
func (s *fakeSession) Cancel(context.Context, string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cancelled = true
	return nil
}
func (s *fakeSession) Close() error { return nil }
func (s *fakeSession) Abort()       {}

// genVM makes a VM from the workload generator, kept in memory.
func genVM(t *testing.T, name string, seed uint64, mem, disk int64) (VM, workload.Spec) {
	t.Helper()
	spec := workload.Spec{Seed: seed, BaseSeed: 42, MemSize: mem, DiskSize: disk, PageSize: 4096, DiskBlock: 65536,
		ZeroFrac: 0.3, SharedFrac: 0.2, RepeatFrac: 0.1}
	var m, d bytes.Buffer
	if err := spec.Write(&m, &d); err != nil {
		t.Fatal(err)
	}
	vm := VM{Name: name, Regions: []Region{
		{Name: "mem", Kind: manifest.KindMemory, Size: mem, ChunkSize: 4096, Data: bytes.NewReader(m.Bytes())},
	}}
	if disk > 0 {
		vm.Regions = append(vm.Regions, Region{Name: "disk0", Kind: manifest.KindDisk, Size: disk, ChunkSize: 65536, Data: bytes.NewReader(d.Bytes())})
	}
	return vm, spec
}

func testConfig(dest string, via ...string) Config {
	cfg := DefaultConfig(dest)
	cfg.Via = via
	cfg.BatchBytes = 64 << 10 // many small batches: exercises the scheduler
	cfg.RelayBacklog = 1
	cfg.NoEndgame = true // exact accounting; TestEndgame covers the endgame
	return cfg
}

func evict(t *testing.T, c *fakeCluster, cfg Config, vms ...VM) *Result {
	t.Helper()
	e, err := New(c, vms, cfg)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.Run(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// getAnywhere reads a chunk from any live peer.
func (c *fakeCluster) getAnywhere(id chunk.ID) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, st := range c.stores {
		if !c.gone[p] && st.Has(id) {
			return st.Get(id, nil)
		}
	}
	return nil, chunkstore.ErrNotFound
}

// checkComplete asserts that every VM can be rebuilt: the manifest is at
// a live target (the destination resolves it from there), every chunk it names is held by `replicas` live peers
// and verifies, and every non-zero position was reported with a holder.
func checkComplete(t *testing.T, c *fakeCluster, res *Result, replicas int, vms ...VM) {
	t.Helper()
	for vi, vr := range res.VMs {
		rootData, err := c.getAnywhere(vr.Root)
		if err != nil {
			t.Fatalf("%s: manifest root held nowhere: %v", vr.Name, err)
		}
		m, err := manifest.Decode(rootData)
		if err != nil {
			t.Fatal(err)
		}
		s := c.sessions[vi]
		if !s.done || s.root != vr.Root {
			t.Fatalf("%s: destination was not handed the root", vr.Name)
		}
		for ri, r := range m.Regions {
			var ids []chunk.ID
			for _, b := range r.Blocks {
				bd, err := c.getAnywhere(b)
				if err != nil {
					t.Fatalf("manifest block held nowhere: %v", err)
				}
				ids, _ = manifest.DecodeBlock(bd, ids)
			}
			src := vms[vi].Regions[ri]
			buf := make([]byte, r.ChunkSize)
			for i, id := range ids {
				n := int(min(int64(r.ChunkSize), r.Size-int64(i)*int64(r.ChunkSize)))
				src.Data.ReadAt(buf[:n], int64(i)*int64(r.ChunkSize))
				if id.IsZero() {
					if !chunk.IsZeroData(buf[:n]) {
						t.Fatalf("%s %s chunk %d: manifest says zero", vr.Name, r.Name, i)
					}
					continue
				}
				if chunk.Sum(buf[:n]) != id {
					t.Fatalf("%s %s chunk %d: manifest ID wrong", vr.Name, r.Name, i)
				}
				holders := 0
				for p, st := range c.stores {
					if !c.gone[p] && st.Has(id) {
						got, _ := st.Get(id, nil)
						if chunk.Sum(got) != id {
							t.Fatal("stored chunk does not verify")
						}
						holders++
					}
				}
				if holders < replicas {
					t.Fatalf("%s %s chunk %d held by %d live peers, want %d", vr.Name, r.Name, i, holders, replicas)
				}
				pl, ok := s.placed[[2]uint64{uint64(ri), uint64(i)}]
				if !ok || pl.ID != id || bits.OnesCount32(pl.Holders) == 0 {
					t.Fatalf("%s %s chunk %d: no placement reported", vr.Name, r.Name, i)
				}
			}
		}
	}
}

func TestEvictOneVMAccounting(t *testing.T) {
	c := newFakeCluster("dest", "r1", "r2", "r3")
	vm, spec := genVM(t, "web1", 1, 8<<20, 4<<20)
	res := evict(t, c, testConfig("dest", "r1", "r2", "r3"), vm)
	checkComplete(t, c, res, 1, vm)

	mem, disk := spec.Count()
	wantZero := mem.Zero + disk.Zero
	wantUnique := mem.Shared + mem.Unique + mem.DistinctRepeated + disk.Shared + disk.Unique + disk.DistinctRepeated
	if res.ZeroChunks != wantZero || res.UniqueChunks != wantUnique {
		t.Fatalf("zero %d unique %d, want %d and %d", res.ZeroChunks, res.UniqueChunks, wantZero, wantUnique)
	}
	if res.Chunks != res.ZeroChunks+res.UniqueChunks+res.DupWithin+res.DupAcross {
		t.Fatalf("chunks %d ≠ zero %d + unique %d + dups %d/%d", res.Chunks, res.ZeroChunks, res.UniqueChunks, res.DupWithin, res.DupAcross)
	}
	// Every distinct non-zero chunk was pushed exactly once; no zero chunk travelled.
	var pushed int64
	for _, n := range c.pushed {
		pushed += n
	}
	if pushed != res.UniqueBytes+res.ManifestPushed || res.ManifestPushed != 0 {
		t.Fatalf("pushed %d bytes (manifest %d), want unique %d and no manifest: the destination builds it", pushed, res.ManifestPushed, res.UniqueBytes)
	}
	if !c.sessions[0].built {
		t.Fatal("the destination did not build the manifest from the placements")
	}
	// Pushes are placed whole, by digest; only further positions of a
	// chunk (repeated pages) need their own placement.
	if pushes := c.sessions[0].pushPlaced; pushes == 0 {
		t.Fatal("no push placed by its digest")
	} else {
		t.Logf("%d pushes placed by digest for %d unique chunks", pushes, res.UniqueChunks)
	}
	for id, n := range c.pushedByID {
		if n != 1 {
			t.Fatalf("chunk %s pushed %d times", id.Short(), n)
		}
		if id.IsZero() {
			t.Fatal("the zero marker was pushed")
		}
	}
	var reported int64
	for _, n := range res.SentBytes {
		reported += n
	}
	if reported != pushed {
		t.Fatalf("report says %d bytes sent, peers received %d", reported, pushed)
	}
	if res.ManifestBytes*100 > res.Bytes {
		t.Fatalf("manifest %d bytes is over 1%% of %d", res.ManifestBytes, res.Bytes)
	}
}

func TestEvictTwoVMsShareBase(t *testing.T) {
	c := newFakeCluster("dest", "r1")
	a, spec := genVM(t, "a", 1, 8<<20, 0)
	b, _ := genVM(t, "b", 2, 8<<20, 0)
	res := evict(t, c, testConfig("dest", "r1"), a, b)
	checkComplete(t, c, res, 1, a, b)
	mem, _ := spec.Count()
	if res.DupAcross != mem.Shared {
		t.Fatalf("%d chunks deduplicated across VMs, want the %d shared ones", res.DupAcross, mem.Shared)
	}
	for id, n := range c.pushedByID {
		if n != 1 {
			t.Fatalf("chunk %s pushed %d times", id.Short(), n)
		}
	}
}

func TestEvictReplicas(t *testing.T) {
	c := newFakeCluster("dest", "r1", "r2")
	vm, _ := genVM(t, "web1", 3, 4<<20, 2<<20)
	cfg := testConfig("dest", "r1", "r2")
	cfg.Replicas = 2
	res := evict(t, c, cfg, vm)
	checkComplete(t, c, res, 2, vm)
	// Data chunks are pushed twice; the manifest once, the destination
	// building its own copy: every chunk ends on two holders.
	for id := range c.pushedByID {
		if n := len(c.holdersOf(id)); n != 2 {
			t.Fatalf("chunk %s on %d holders with --replicas 2", id.Short(), n)
		}
	}
	if res.ManifestPushed != res.ManifestBytes {
		t.Fatalf("manifest pushed %d bytes, want one copy of %d", res.ManifestPushed, res.ManifestBytes)
	}
	// Two holders of a chunk answered different pushes: each chunk is
	// placed by its ID.
	if n := c.sessions[0].pushPlaced; n != 0 {
		t.Fatalf("%d pushes placed by digest with two replicas", n)
	}
}

func TestEvictSurvivesRelayKilledMidScatter(t *testing.T) {
	c := newFakeCluster("dest", "r1", "r2")
	c.delay["dest"] = 20 * time.Millisecond // a slow destination: relays get work
	c.failAfter["r1"] = 1
	vm, _ := genVM(t, "web1", 4, 8<<20, 0)
	res := evict(t, c, testConfig("dest", "r1", "r2"), vm)
	checkComplete(t, c, res, 1, vm)
	if !c.gone["r1"] {
		t.Fatal("r1 was never killed: the test did not test anything")
	}
}

func TestEvictRepairsRelayLostAfterAck(t *testing.T) {
	c := newFakeCluster("dest", "r1", "r2")
	c.delay["dest"] = 2 * time.Millisecond // a slow destination: relays get work
	// r1 acknowledges everything it is sent, and is dead by the time the
	// source checks, before declaring the eviction over, that every relay
	// holding chunks is still there: its chunks must be read again and
	// placed elsewhere.
	c.dieOnCheck["r1"] = true
	vm, _ := genVM(t, "web1", 5, 8<<20, 0)
	res := evict(t, c, testConfig("dest", "r1", "r2"), vm)
	if !c.gone["r1"] {
		t.Fatal("r1 took no data: the test did not test anything")
	}
	checkComplete(t, c, res, 1, vm)
	if res.Repaired == 0 {
		t.Fatal("r1 held acknowledged chunks when it vanished, yet nothing was repaired")
	}
}

func TestEvictSkipsChunksDestinationHolds(t *testing.T) {
	c := newFakeCluster("dest", "r1")
	a, _ := genVM(t, "a", 1, 4<<20, 0)
	evict(t, c, testConfig("dest", "r1"), a)
	before := c.pushed["dest"] + c.pushed["r1"]
	// A second VM of the same base, evicted later to the same destination.
	b, spec := genVM(t, "b", 2, 4<<20, 0)
	c.sessions = nil
	res := evict(t, c, testConfig("dest", "r1"), b)
	mem, _ := spec.Count()
	if res.AlreadyHeld < mem.Shared*9/10 {
		// Shared chunks that went to r1 rather than dest the first time
		// are not known to be held at dest.
		t.Logf("already held %d of %d shared", res.AlreadyHeld, mem.Shared)
	}
	if res.AlreadyHeld == 0 {
		t.Fatal("no chunk recognised as already held at the destination")
	}
	sent := c.pushed["dest"] + c.pushed["r1"] - before
	if sent != res.UniqueBytes-res.AlreadyHeld*4096+res.ManifestPushed {
		t.Fatalf("sent %d bytes, want unique %d - held %d + manifest %d", sent, res.UniqueBytes, res.AlreadyHeld*4096, res.ManifestPushed)
	}
}

func TestEvictDirectOnlyDestination(t *testing.T) {
	c := newFakeCluster("dest", "r1")
	vm, _ := genVM(t, "web1", 6, 4<<20, 0)
	cfg := testConfig("dest", "r1")
	cfg.Direct = true
	res := evict(t, c, cfg, vm)
	checkComplete(t, c, res, 1, vm)
	if c.pushed["r1"] != 0 {
		t.Fatal("--direct pushed to an intermediate")
	}
}

func TestReadChunkByPosition(t *testing.T) {
	c := newFakeCluster("dest")
	vm, _ := genVM(t, "web1", 7, 1<<20, 0)
	e, err := New(c, []VM{vm}, testConfig("dest"))
	if err != nil {
		t.Fatal(err)
	}
	id := e.MigrationIDs()[0]
	got, err := e.ReadChunk(id, 0, 17, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 4096)
	vm.Regions[0].Data.ReadAt(want, 17*4096)
	if !bytes.Equal(got, want) {
		t.Fatal("ReadChunk returned other bytes")
	}
	for _, bad := range []struct {
		region uint16
		index  uint64
	}{{1, 0}, {0, 256}, {0, 1 << 40}} {
		if _, err := e.ReadChunk(id, bad.region, bad.index, nil); !errors.Is(err, ErrUnknownPosition) {
			t.Fatalf("ReadChunk(%d, %d): %v", bad.region, bad.index, err)
		}
	}
	if _, err := e.ReadChunk(wire.MigrationID{9}, 0, 0, nil); !errors.Is(err, ErrUnknownPosition) {
		t.Fatal("unknown migration accepted")
	}
}

func TestValidate(t *testing.T) {
	cases := map[string]Config{
		"no dest":           {Replicas: 1},
		"replicas direct":   func() Config { c := testConfig("d", "r"); c.Direct = true; c.Replicas = 2; return c }(),
		"too many replicas": func() Config { c := testConfig("d", "r"); c.Replicas = 3; return c }(),
		"dest as via":       testConfig("d", "d"),
	}
	for name, c := range cases {
		if c.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// The conflicts a caller may explain in its own terms are typed.
	c := testConfig("d", "r")
	c.Direct, c.Replicas = true, 2
	if err := c.Validate(); !errors.Is(err, ErrDirectReplicas) {
		t.Errorf("direct with 2 replicas: %v, want ErrDirectReplicas", err)
	}
	c = testConfig("d", "r1", "r2")
	c.Replicas, c.Redundancy = 2, Redundancy{2, 1}
	if err := c.Validate(); !errors.Is(err, ErrRedundancyConflict) {
		t.Errorf("redundancy with 2 replicas: %v, want ErrRedundancyConflict", err)
	}
}

// With the endgame, idle relays take spare copies of what a destination
// that slowed down suddenly still has in flight: the VM is complete all the
// same, and the spare bytes are reported.
func TestEndgame(t *testing.T) {
	c := newFakeCluster("dest", "r1", "r2")
	c.delay["dest"] = 2 * time.Millisecond
	c.delay["r1"], c.delay["r2"] = time.Millisecond, time.Millisecond
	c.slowAfter["dest"], c.slowDelay = 10, 300*time.Millisecond
	vm, _ := genVM(t, "web1", 8, 8<<20, 0)
	cfg := testConfig("dest", "r1", "r2")
	cfg.NoEndgame = false
	res := evict(t, c, cfg, vm)
	checkComplete(t, c, res, 1, vm)
	var sent int64
	for _, n := range res.SentBytes {
		sent += n
	}
	if res.EndgameBytes == 0 {
		t.Fatal("no spare copies: the test did not reach the endgame")
	}
	if sent < res.UniqueBytes+res.ManifestPushed || sent > res.UniqueBytes+res.ManifestPushed+res.EndgameBytes {
		t.Fatalf("acknowledged %d bytes; want between unique+manifest %d and that plus the endgame's %d",
			sent, res.UniqueBytes+res.ManifestPushed, res.EndgameBytes)
	}
}

// Targets as fast as each other share what limits them (the source's
// uplink, here the fake's per-push delay): a spare copy would land no
// sooner than the original, so the endgame makes none.
func TestEndgameNoSparesAmongEquals(t *testing.T) {
	c := newFakeCluster("dest", "r1", "r2")
	for _, p := range []string{"dest", "r1", "r2"} {
		c.delay[p] = 5 * time.Millisecond
	}
	vm, _ := genVM(t, "web1", 8, 8<<20, 0)
	cfg := testConfig("dest", "r1", "r2")
	cfg.NoEndgame = false
	res := evict(t, c, cfg, vm)
	checkComplete(t, c, res, 1, vm)
	if res.EndgameBytes != 0 {
		t.Fatalf("%d bytes of spare copies among equally fast targets", res.EndgameBytes)
	}
}

// A relay that goes silent mid-scatter, while still answering capacity
// checks, is given up after its stall limit: what it acknowledged is
// repaired elsewhere and the eviction completes.
func TestEvictRoutesAroundSilentRelay(t *testing.T) {
	c := newFakeCluster("dest", "r1", "r2")
	c.delay["dest"] = 20 * time.Millisecond // a slow destination: relays get work
	c.delay["r1"] = 2 * time.Millisecond    // answers long enough to have a measured rate
	c.delay["r2"] = 6 * time.Millisecond
	c.blackHoleAfter["r1"] = 12
	vm, _ := genVM(t, "web1", 12, 16<<20, 0)
	start := time.Now()
	res := evict(t, c, testConfig("dest", "r1", "r2"), vm)
	checkComplete(t, c, res, 1, vm)
	if c.blackHoleAfter["r1"] > 0 {
		t.Fatalf("r1 never went silent (%d pushes to go; pushed %v): the test did not test anything", c.blackHoleAfter["r1"], c.pushed)
	}
	if res.Repaired == 0 {
		t.Fatal("r1 held acknowledged chunks when it went silent, yet nothing was repaired")
	}
	took := time.Since(start)
	t.Logf("completed in %v with %d chunks repaired", took.Round(time.Millisecond), res.Repaired)
	if took > 20*time.Second {
		t.Fatalf("took %v: the silent relay was not given up after its stall limit", took)
	}
}

// An image that ends early (truncated while it is read) fails the
// eviction with ErrImageChanged: the stale tail of a reused read buffer
// is never hashed and sent as VM data, and no manifest is handed over.
func TestEvictTruncatedImageFails(t *testing.T) {
	c := newFakeCluster("dest", "r1")
	vm, _ := genVM(t, "web1", 9, 4<<20, 0)
	full := vm.Regions[0].Data.(*bytes.Reader)
	b := make([]byte, full.Size())
	full.ReadAt(b, 0)
	vm.Regions[0].Data = bytes.NewReader(b[:3<<20]) // the file now ends at 3 MiB
	e, err := New(c, []VM{vm}, testConfig("dest", "r1"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Run(t.Context(), nil)
	if !errors.Is(err, ErrImageChanged) || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("got %v, want ErrImageChanged saying it was truncated", err)
	}
	for _, s := range c.sessions {
		if s.done || !s.cancelled {
			t.Fatalf("truncated image: manifest handed over %v, migration given up %v", s.done, s.cancelled)
		}
	}
}

// A snapshot that reports a change once everything is read fails the
// eviction before any manifest is handed over.
func TestEvictChangedImageFailsBeforeHandover(t *testing.T) {
	c := newFakeCluster("dest", "r1")
	vm, _ := genVM(t, "web1", 10, 2<<20, 0)
	cfg := testConfig("dest", "r1")
	cfg.Unchanged = func() error { return errors.New("mem.img was written meanwhile") }
	e, err := New(c, []VM{vm}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Run(t.Context(), nil); !errors.Is(err, ErrImageChanged) || !strings.Contains(err.Error(), "written meanwhile") {
		t.Fatalf("got %v, want ErrImageChanged with the reason", err)
	}
	for _, s := range c.sessions {
		if s.done {
			t.Fatal("a manifest was handed over for a changed image")
		}
	}
}

// A relay whose store fills up mid-scatter (its disk taken by others after
// it reported room) answers "full": the source places the rest elsewhere,
// with replicas and with stripes alike.
func TestEvictRoutesAroundFullRelay(t *testing.T) {
	for _, red := range []Redundancy{{}, {4, 1}} {
		t.Run(fmt.Sprintf("redundancy %v", red), func(t *testing.T) {
			c := newFakeCluster("dest", "r1", "r2", "r3", "r4", "r5", "r6")
			// A slow destination, and relays slower than r2: r2 is sure
			// to be offered work (else it could go without: the endgame
			// makes no spare copies among equals).
			c.delay["dest"] = 2 * time.Millisecond
			for _, r := range []string{"r1", "r3", "r4", "r5", "r6"} {
				c.delay[r] = time.Millisecond
			}
			c.stores["r2"] = chunkstore.NewMemory(100 << 10)
			c.claimsFree["r2"] = 1 << 30
			vm, _ := genVM(t, "web1", 9, 8<<20, 0)
			cfg := testConfig("dest", "r1", "r2", "r3", "r4", "r5", "r6")
			cfg.Redundancy = red
			res := evict(t, c, cfg, vm)
			checkComplete(t, c, res, 1, vm)
			if red.On() {
				checkStripes(t, c, stripesOf(t, c, res.VMs[0].Root))
			}
			if c.refusedFull["r2"] == 0 || c.pushed["r2"] > 100<<10 {
				t.Fatalf("r2 stored %d bytes of its 100 KiB and refused %d chunks as full: want it to fill up", c.pushed["r2"], c.refusedFull["r2"])
			}
			t.Logf("r2 took %d KiB, then answered full for %d chunks; per target %v", c.pushed["r2"]>>10, c.refusedFull["r2"], res.SentBytes)
		})
	}
}

// The destination is told it may pull from the relays during the scatter
// only when its downlink is more than its even share of the source's
// uplink and the relays can take in all the source sends (all rates said).
func TestDestMayPull(t *testing.T) {
	const mbit = 1e6 / 8
	for _, tc := range []struct {
		name         string
		uplink, dest int64
		relays       []int64
		want         bool
	}{
		{"fast destination, fast relay", 1000 * mbit, 900 * mbit, []int64{1000 * mbit}, true},
		{"destination under its even share", 1000 * mbit, 300 * mbit, []int64{1000 * mbit}, false},
		{"relays too slow to take it all", 1000 * mbit, 900 * mbit, []int64{400 * mbit, 400 * mbit}, false},
		{"a relay that did not say", 1000 * mbit, 900 * mbit, []int64{1000 * mbit, 0}, false},
		{"uplink unknown", 0, 900 * mbit, []int64{1000 * mbit}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peers := []string{"dest"}
			for i := range tc.relays {
				peers = append(peers, fmt.Sprintf("r%d", i))
			}
			c := newFakeCluster(peers...)
			c.downlink["dest"] = tc.dest
			for i, d := range tc.relays {
				c.downlink[peers[1+i]] = d
			}
			vm, _ := genVM(t, "web1", 3, 1<<20, 0)
			cfg := testConfig("dest", peers[1:]...)
			cfg.Uplink = tc.uplink
			evict(t, c, cfg, vm)
			if got := c.sessions[0].open.PullDuringScatter; got != tc.want {
				t.Fatalf("PullDuringScatter %v, want %v", got, tc.want)
			}
		})
	}
}

// A destination that says its store is empty is not asked which chunks it
// holds (each have query is bytes on the source's uplink and a round trip
// before a batch may go); one that does not say is asked about every
// distinct chunk. Both end complete, each chunk pushed once.
func TestNoHaveQueriesToAnEmptyDestination(t *testing.T) {
	for _, empty := range []bool{true, false} {
		c := newFakeCluster("dest", "r1")
		c.saysEmpty["dest"] = empty
		vm, _ := genVM(t, "web1", 4, 4<<20, 0)
		res := evict(t, c, testConfig("dest", "r1"), vm)
		checkComplete(t, c, res, 1, vm)
		t.Logf("empty %v: %d chunk IDs asked about, %d distinct chunks", empty, c.haveAsked, res.UniqueChunks)
		if empty && c.haveAsked != 0 || !empty && c.haveAsked < int(res.UniqueChunks) {
			t.Fatalf("destination says empty %v: asked about %d IDs for %d distinct chunks", empty, c.haveAsked, res.UniqueChunks)
		}
	}
}

// A destination that cannot build the manifest from its placements (it
// answers so) is sent it, and the eviction completes all the same.
func TestManifestSentWhenDestinationCannotBuildIt(t *testing.T) {
	c := newFakeCluster("dest", "r1")
	c.refuseBuild = true
	vm, _ := genVM(t, "web1", 6, 2<<20, 0)
	res := evict(t, c, testConfig("dest", "r1"), vm)
	checkComplete(t, c, res, 1, vm)
	if c.sessions[0].built || res.ManifestPushed != res.ManifestBytes {
		t.Fatalf("built %v, manifest pushed %d of %d", c.sessions[0].built, res.ManifestPushed, res.ManifestBytes)
	}
}
