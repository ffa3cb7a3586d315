package fetch_test

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"maps"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/wire"
	"github.com/sgrelay/sg/internal/workload"
)

// gnet is a fake network for gathers: per-peer stores and latencies, a
// source that serves positions, and a record of releases.
type gnet struct {
	mu       sync.Mutex
	stores   map[string]*chunkstore.Memory
	latency  map[string]time.Duration
	rtt      map[string]time.Duration
	liar     map[string]bool
	silent   map[string]bool  // accepts requests, never answers (a crashed host)
	served   map[string]int64 // chunk bytes served per peer
	source   string
	regions  [][]byte // the source's VM, by region
	chunk    []int
	released map[string][]chunk.ID
	renewed  map[string]int // renewals per holder
}

func newGnet(source string) *gnet {
	return &gnet{stores: map[string]*chunkstore.Memory{}, latency: map[string]time.Duration{}, rtt: map[string]time.Duration{},
		liar: map[string]bool{}, silent: map[string]bool{}, served: map[string]int64{}, source: source, released: map[string][]chunk.ID{},
		renewed: map[string]int{}}
}

func (n *gnet) peer(p string, rtt time.Duration) *chunkstore.Memory {
	n.stores[p] = chunkstore.NewMemory(1 << 30)
	n.rtt[p], n.latency[p] = rtt, rtt
	return n.stores[p]
}

type ggetter struct {
	n     *gnet
	peer  string
	reset chan struct{} // closed by Abort
	once  sync.Once
}

func (n *gnet) OpenGet(_ context.Context, p string, _ wire.Priority, _ int) (fetch.Getter, error) {
	if n.stores[p] == nil {
		return nil, errors.New("unknown peer")
	}
	return &ggetter{n: n, peer: p, reset: make(chan struct{})}, nil
}

func (g *ggetter) Get(_ context.Context, ids []chunk.ID, done func([]wire.GetResult, error)) error {
	g.n.mu.Lock()
	silent := g.n.silent[g.peer]
	g.n.mu.Unlock()
	if silent {
		go func() { // ends when the stream is reset
			<-g.reset
			done(nil, errors.New("stream reset"))
		}()
		return nil
	}
	go func() { // a network round trip: ends by itself
		g.n.mu.Lock()
		lat := g.n.latency[g.peer]
		g.n.mu.Unlock()
		time.Sleep(lat)
		res := make([]wire.GetResult, len(ids))
		for i, id := range ids {
			d, err := g.n.stores[g.peer].Get(id, nil)
			g.n.mu.Lock()
			liar := g.n.liar[g.peer]
			if err == nil && !liar {
				g.n.served[g.peer] += int64(len(d))
			}
			g.n.mu.Unlock()
			switch {
			case err != nil:
				res[i].Status = wire.StatusMissing
			case liar:
				res[i].Status = wire.StatusBadHash // what node.GetStream reports for bytes that fail the hash
			default:
				res[i] = wire.GetResult{Status: wire.StatusOK, Data: d}
			}
		}
		done(res, nil)
	}()
	return nil
}
func (g *ggetter) Close() error { return nil }
func (g *ggetter) Abort()       { g.once.Do(func() { close(g.reset) }) }

type gdemander struct {
	n *gnet
}

func (n *gnet) OpenDemand(context.Context, string, int) (fetch.Demander, error) {
	return &gdemander{n: n}, nil
}

func (d *gdemander) Demand(_ context.Context, req wire.DemandReq, done func(wire.Status, []byte, error)) error {
	go func() { // a network round trip: ends by itself
		time.Sleep(d.n.rtt[d.n.source])
		r := d.n.regions[req.Region]
		cs := d.n.chunk[req.Region]
		off := int(req.Index) * cs
		data := r[off:min(len(r), off+cs)]
		d.n.mu.Lock()
		d.n.served[d.n.source] += int64(len(data))
		d.n.mu.Unlock()
		if chunk.IsZeroData(data) {
			done(wire.StatusZero, nil, nil)
			return
		}
		done(wire.StatusOK, data, nil)
	}()
	return nil
}
func (d *gdemander) Close() error { return nil }
func (d *gdemander) Abort()       {}

func (n *gnet) RTT(p string) (time.Duration, bool) { r, ok := n.rtt[p]; return r, ok }
func (n *gnet) Zone(string) string                 { return "" }
func (n *gnet) Renew(_ context.Context, p string, _ wire.MigrationID) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.renewed[p]++
	return nil
}

func (n *gnet) Release(_ context.Context, p string, r wire.Release) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.released[p] = append(n.released[p], r.Chunks...)
	return nil
}

// fixture is one VM evicted to holders, ready to gather.
type fixture struct {
	net        *gnet
	local      *chunkstore.Store
	incomings  *fetch.Incomings
	open       wire.Open
	placements []wire.Placement
	root       chunk.ID
	data       [][]byte
}

// newFixture cuts spec's VM into chunks, stores each distinct chunk at the
// holders chosen by place, and the manifest in the local store (the
// scatter stores it at the destination).
func newFixture(t testing.TB, net *gnet, local *chunkstore.Store, spec workload.Spec, place func(id chunk.ID) []uint8, holders []string) *fixture {
	t.Helper()
	var m, d bytes.Buffer
	if err := spec.Write(&m, &d); err != nil {
		t.Fatal(err)
	}
	f := &fixture{net: net, local: local, data: [][]byte{m.Bytes()}}
	sizes := []int{spec.PageSize}
	if spec.DiskSize > 0 {
		f.data = append(f.data, d.Bytes())
		sizes = append(sizes, spec.DiskBlock)
	}
	net.regions, net.chunk = f.data, sizes
	f.open = wire.Open{VM: "vm", Regions: nil}
	crand.Read(f.open.ID[:])
	man := manifest.Manifest{Name: "vm"}
	for ri, data := range f.data {
		cs := sizes[ri]
		name := []string{"mem", "disk0"}[ri]
		f.open.Regions = append(f.open.Regions, wire.RegionInfo{Name: name, Size: uint64(len(data)), ChunkSize: uint32(cs)})
		r := manifest.Region{Name: name, Size: int64(len(data)), ChunkSize: cs}
		var ids []chunk.ID
		for off := 0; off < len(data); off += cs {
			c := data[off:min(len(data), off+cs)]
			if chunk.IsZeroData(c) {
				ids = append(ids, chunk.Zero)
				continue
			}
			id := chunk.Sum(c)
			ids = append(ids, id)
			var mask uint32
			for _, h := range place(id) {
				mask |= 1 << h
				net.stores[holders[h]].Put(id, c)
			}
			f.placements = append(f.placements, wire.Placement{Region: uint16(ri), Index: uint64(off / cs), ID: id, Holders: mask})
		}
		nodes, err := manifest.Build(&r, ids)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			local.Put(n.ID, n.Data)
		}
		man.Regions = append(man.Regions, r)
	}
	rootData := man.Encode()
	f.root = chunk.Sum(rootData)
	local.Put(f.root, rootData)
	f.incomings = fetch.NewIncomings(local)
	return f
}

// start opens the migration at the destination and a gatherer for it.
func (f *fixture) start(t testing.TB, holders []string, cfg fetch.GatherConfig) (*fetch.Incoming, *fetch.Gatherer) {
	t.Helper()
	in, err := f.incomings.Open(f.net.source, f.open)
	if err != nil {
		t.Fatal(err)
	}
	g, err := fetch.NewGatherer(in, f.net, f.local, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	in.SetListener(g)
	var hs []wire.Holder
	for i, h := range holders {
		hs = append(hs, wire.Holder{Index: uint8(i), Peer: h})
	}
	if err := f.incomings.AddHolders(f.net.source, f.open.ID, hs); err != nil {
		t.Fatal(err)
	}
	return in, g
}

func (f *fixture) placeAll(t testing.TB, steps int, pause time.Duration) {
	ps := f.placements
	per := (len(ps) + steps - 1) / steps
	for len(ps) > 0 {
		n := min(per, len(ps), wire.MaxPlacements)
		if err := f.incomings.AddPlacements(f.net.source, f.open.ID, ps[:n]); err != nil {
			t.Error(err)
			return
		}
		ps = ps[n:]
		time.Sleep(pause)
	}
	if err := f.incomings.Finish(f.net.source, f.open.ID, f.root, false); err != nil {
		t.Error(err)
	}
}

func smallSpec(seed uint64) workload.Spec {
	return workload.Spec{Seed: seed, BaseSeed: 42, MemSize: 8 << 20, DiskSize: 4 << 20, PageSize: 4096, DiskBlock: 65536,
		ZeroFrac: 0.3, SharedFrac: 0.2, RepeatFrac: 0.1}
}

func checkFiles(t *testing.T, g *fetch.Gatherer, data [][]byte) {
	t.Helper()
	for i, p := range g.Paths() {
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data[i]) {
			t.Fatalf("materialized %s differs from the source", p)
		}
	}
}

func TestGatherReadsWhilePlacementsArrive(t *testing.T) {
	net := newGnet("src")
	holders := []string{"dst-store", "r1", "r2"}
	for i, h := range holders {
		net.peer(h, time.Duration(i+1)*time.Millisecond)
	}
	net.rtt["src"] = time.Millisecond
	local, _ := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 30})
	f := newFixture(t, net, local, smallSpec(1), func(id chunk.ID) []uint8 { return []uint8{1 + id[0]%2} }, holders)
	_, g := f.start(t, holders, fetch.DefaultGatherConfig(t.TempDir()))
	ctx := t.Context()
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	go f.placeAll(t, 20, 5*time.Millisecond)

	// Random 4 KiB reads while the placements arrive: before its placement
	// a read goes to the source by position, after it to a holder.
	r := rand.New(rand.NewPCG(1, 1))
	buf := make([]byte, 4096)
	for range 300 {
		region := r.IntN(2)
		off := int64(r.IntN(len(f.data[region])/4096)) * 4096
		n, err := g.ReadAt(ctx, region, buf, off)
		if err != nil || n != 4096 {
			t.Fatalf("ReadAt(%d, %d) = %d, %v", region, off, n, err)
		}
		if !bytes.Equal(buf, f.data[region][off:off+4096]) {
			t.Fatalf("ReadAt(%d, %d): wrong bytes", region, off)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkFiles(t, g, f.data)
	rep := g.Report()
	if !rep.Complete || rep.TMT <= 0 || rep.DemandReads < 300 {
		t.Fatalf("report %+v", rep)
	}
	if len(net.released["r1"]) == 0 || len(net.released["r2"]) == 0 {
		t.Fatalf("holders were not released: %v", len(net.released))
	}
	if _, ok := net.released["src"]; !ok {
		t.Fatal("the source was not told the gather completed")
	}
}

// trace is a fault trace with locality: clusters of sequential pages at
// random places, as a guest touching its working set produces.
func trace(pages, clusters, length int, seed uint64) []int64 {
	r := rand.New(rand.NewPCG(seed, seed))
	var out []int64
	for range clusters {
		start := r.IntN(pages - length)
		for i := range length {
			out = append(out, int64(start+i)*4096)
		}
	}
	return out
}

func hitRate(t *testing.T, prefetch bool) (float64, fetch.Report) {
	net := newGnet("src")
	// A holder slow enough that the sequential sweep cannot finish during
	// the trace: what is local at a fault is there thanks to bubbling.
	net.peer("r1", 8*time.Millisecond)
	net.rtt["src"] = 8 * time.Millisecond
	local, _ := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 30})
	spec := smallSpec(7)
	spec.MemSize, spec.DiskSize, spec.ZeroFrac, spec.RepeatFrac = 32<<20, 0, 0, 0
	f := newFixture(t, net, local, spec, func(chunk.ID) []uint8 { return []uint8{0} }, []string{"r1"})
	cfg := fetch.DefaultGatherConfig(t.TempDir())
	cfg.Prefetch = prefetch
	_, g := f.start(t, []string{"r1"}, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go g.Run(ctx)
	f.placeAll(t, 1, 0)
	buf := make([]byte, 4096)
	for _, off := range trace(int(spec.MemSize/4096), 40, 24, 3) {
		if _, err := g.ReadAt(ctx, 0, buf, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, f.data[0][off:off+4096]) {
			t.Fatal("wrong bytes")
		}
		time.Sleep(500 * time.Microsecond) // the guest computes between touches
	}
	rep := g.Report()
	return float64(rep.DemandHits) / float64(rep.DemandReads), rep
}

func TestPrefetchServesMostFaultsLocally(t *testing.T) {
	without, _ := hitRate(t, false)
	with, rep := hitRate(t, true)
	t.Logf("reads served locally: %.1f%% with prefetch, %.1f%% without (%d reads, %d waited for the network)",
		with*100, without*100, rep.DemandReads, rep.NetworkFaults)
	if with < 0.80 {
		t.Fatalf("prefetch served %.1f%% of faults locally, want ≥ 80%%", with*100)
	}
	if without > 0.2 {
		t.Fatalf("without prefetch %.1f%% were local: the trace does not test prefetch", without*100)
	}
}

func TestNearestHolderChosenAndSlowOneAvoided(t *testing.T) {
	net := newGnet("src")
	net.peer("near", 1*time.Millisecond)
	net.peer("far", 100*time.Millisecond)
	local, _ := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 30})
	spec := smallSpec(9)
	both := func(chunk.ID) []uint8 { return []uint8{0, 1} }
	f := newFixture(t, net, local, spec, both, []string{"near", "far"})
	_, g := f.start(t, []string{"near", "far"}, fetch.DefaultGatherConfig(t.TempDir()))
	go f.placeAll(t, 1, 0)
	if err := g.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, g, f.data)
	rep := g.Report()
	near, far := rep.FetchedBytes["near"], rep.FetchedBytes["far"]
	t.Logf("near %d bytes, far %d bytes", near, far)
	if near < 2*far {
		t.Fatalf("nearest holder gave %d bytes, farther one %d: want most from the nearest", near, far)
	}

	// Now the near holder is slowed down (a congested link): requests move.
	net2 := newGnet("src")
	net2.peer("near", 1*time.Millisecond)
	net2.peer("far", 100*time.Millisecond)
	net2.latency["near"] = 500 * time.Millisecond // RTT still says near
	local2, _ := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 30})
	f2 := newFixture(t, net2, local2, smallSpec(10), both, []string{"near", "far"})
	_, g2 := f2.start(t, []string{"near", "far"}, fetch.DefaultGatherConfig(t.TempDir()))
	go f2.placeAll(t, 1, 0)
	if err := g2.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	rep2 := g2.Report()
	t.Logf("slowed near %d bytes, far %d bytes", rep2.FetchedBytes["near"], rep2.FetchedBytes["far"])
	if rep2.FetchedBytes["far"] <= rep2.FetchedBytes["near"] {
		t.Fatalf("with the near holder slowed, far gave %d bytes and near %d: want the shift", rep2.FetchedBytes["far"], rep2.FetchedBytes["near"])
	}
}

func TestSecondVMOfSameBaseReusesLocalChunks(t *testing.T) {
	net := newGnet("src")
	net.peer("r1", time.Millisecond)
	local, _ := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 30})
	one := func(chunk.ID) []uint8 { return []uint8{0} }
	a := newFixture(t, net, local, smallSpec(1), one, []string{"r1"})
	_, ga := a.start(t, []string{"r1"}, fetch.DefaultGatherConfig(t.TempDir()))
	go a.placeAll(t, 1, 0)
	if err := ga.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	specB := smallSpec(2)
	b := newFixture(t, net, local, specB, one, []string{"r1"})
	_, gb := b.start(t, []string{"r1"}, fetch.DefaultGatherConfig(t.TempDir()))
	before := net.served["r1"]
	go b.placeAll(t, 1, 0)
	if err := gb.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, gb, b.data)
	mem, disk := specB.Count()
	sharedBytes := mem.Shared*4096 + disk.Shared*65536
	var bUnique int64
	seen := map[chunk.ID]bool{}
	for _, p := range b.placements {
		if !seen[p.ID] {
			seen[p.ID] = true
			bUnique += int64(len(chunkData(b, p)))
		}
	}
	fetched := net.served["r1"] - before
	if fetched != bUnique-sharedBytes {
		t.Fatalf("second VM fetched %d bytes over the network; its distinct chunks are %d of which %d shared with the first: want %d",
			fetched, bUnique, sharedBytes, bUnique-sharedBytes)
	}
	if rep := gb.Report(); rep.LocalChunks < mem.Shared+disk.Shared {
		t.Fatalf("%d chunks reused locally, want at least the %d shared", rep.LocalChunks, mem.Shared+disk.Shared)
	}
}

func chunkData(f *fixture, p wire.Placement) []byte {
	cs := int(f.open.Regions[p.Region].ChunkSize)
	d := f.data[p.Region]
	off := int(p.Index) * cs
	return d[off:min(len(d), off+cs)]
}

func TestLyingHolderDemotedAndBytesStillRight(t *testing.T) {
	net := newGnet("src")
	net.peer("liar", time.Millisecond)
	net.peer("honest", 5*time.Millisecond)
	net.liar["liar"] = true
	local, _ := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 30})
	f := newFixture(t, net, local, smallSpec(4), func(chunk.ID) []uint8 { return []uint8{0, 1} }, []string{"liar", "honest"})
	_, g := f.start(t, []string{"liar", "honest"}, fetch.DefaultGatherConfig(t.TempDir()))
	go f.placeAll(t, 1, 0)
	if err := g.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, g, f.data)
	if rep := g.Report(); rep.FetchedBytes["liar"] != 0 {
		t.Fatalf("%d bytes accepted from the liar", rep.FetchedBytes["liar"])
	}
}

// A holder that stops answering (it crashed; its connection is not yet
// known dead) does not hold the gather: its requests are reset after the
// stall timeout and everything comes from the other holder.
func TestSilentHolderDoesNotStallGather(t *testing.T) {
	net := newGnet("src")
	net.peer("silent", time.Millisecond)
	net.peer("alive", 5*time.Millisecond)
	net.silent["silent"] = true
	local, _ := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 30})
	f := newFixture(t, net, local, smallSpec(11), func(chunk.ID) []uint8 { return []uint8{0, 1} }, []string{"silent", "alive"})
	_, g := f.start(t, []string{"silent", "alive"}, fetch.DefaultGatherConfig(t.TempDir()))
	go f.placeAll(t, 1, 0)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := g.Run(ctx); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, g, f.data)
	rep := g.Report()
	if rep.FetchedBytes["silent"] != 0 || rep.FetchedBytes["alive"] == 0 {
		t.Fatalf("fetched %d bytes from the silent holder, %d from the live one", rep.FetchedBytes["silent"], rep.FetchedBytes["alive"])
	}
}

// A recorded working set is prefetched before anything else: the last
// pages of the VM, which the sequential sweep would reach last, are here
// first.
func TestRecordedWorkingSetPrefetchedFirst(t *testing.T) {
	net := newGnet("src")
	net.peer("r1", 20*time.Millisecond)
	local, _ := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 30})
	spec := smallSpec(21)
	spec.MemSize, spec.DiskSize, spec.ZeroFrac, spec.RepeatFrac, spec.SharedFrac = 16<<20, 0, 0, 0, 0
	f := newFixture(t, net, local, spec, func(chunk.ID) []uint8 { return []uint8{0} }, []string{"r1"})
	pages := int(spec.MemSize / 4096)
	cfg := fetch.DefaultGatherConfig(t.TempDir())
	for i := pages - 64; i < pages; i++ {
		cfg.WorkingSet = append(cfg.WorkingSet, fetch.Position{Region: 0, Index: uint64(i)})
	}
	_, g := f.start(t, []string{"r1"}, cfg)
	f.placeAll(t, 1, 0)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go g.Run(ctx)
	// One round trip later the working set is here; the sweep of 4096
	// pages (64 per 20 ms request, 4 in flight) is far from its end.
	time.Sleep(100 * time.Millisecond)
	buf := make([]byte, 4096)
	for i := pages - 64; i < pages; i++ {
		if _, err := g.ReadAt(ctx, 0, buf, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
	}
	rep := g.Report()
	if rep.DemandHits != 64 || rep.Complete {
		t.Fatalf("%d of 64 working-set pages were here (complete: %v)", rep.DemandHits, rep.Complete)
	}
}

// Two gathers on one node that complete at once each ask the other, as
// they release their holders, whether it still needs a chunk (cluster.Roles
// does so under one lock over its gathers): neither may hold its own
// lock while it asks, or each waits for the other's (they did).
func TestTwoGathersReleasingAtOnce(t *testing.T) {
	net := newGnet("src")
	net.peer("r1", time.Millisecond)
	local, _ := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 30})
	one := func(chunk.ID) []uint8 { return []uint8{0} }
	fs := []*fixture{
		newFixture(t, net, local, smallSpec(1), one, []string{"r1"}),
		newFixture(t, net, local, smallSpec(2), one, []string{"r1"}),
	}
	var gs [2]*fetch.Gatherer
	var both sync.WaitGroup // both gathers are releasing
	both.Add(2)
	var first [2]sync.Once
	var roles sync.Mutex
	for i, f := range fs {
		cfg := fetch.DefaultGatherConfig(t.TempDir())
		cfg.StillNeeded = func(id chunk.ID) bool {
			first[i].Do(func() { both.Done(); both.Wait() })
			roles.Lock()
			defer roles.Unlock()
			return gs[1-i].Needs(id)
		}
		_, gs[i] = f.start(t, []string{"r1"}, cfg)
	}
	errs := make(chan error, 2)
	for i, f := range fs {
		go f.placeAll(t, 1, 0)
		go func() { errs <- gs[i].Run(t.Context()) }()
	}
	timeout := time.After(30 * time.Second)
	for range fs {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-timeout:
			t.Fatal("the two gathers did not end in 30 s: releasing at once, each waits for the other's lock")
		}
	}
	for i, f := range fs {
		checkFiles(t, gs[i], f.data)
	}
}

// Asked to build the manifest from its placements (the source stored no
// copy here), a destination whose placements hash to the root stores the
// manifest and gathers on it; with a root they do not build it answers
// ErrManifestNeeded and changes nothing.
func TestDestinationBuildsTheManifest(t *testing.T) {
	net := newGnet("src")
	net.peer("r1", time.Millisecond)
	src, _ := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 30}) // where newFixture leaves its manifest
	local, _ := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 30})
	f := newFixture(t, net, src, smallSpec(3), func(chunk.ID) []uint8 { return []uint8{0} }, []string{"r1"})
	f.local, f.incomings = local, fetch.NewIncomings(local)
	_, g := f.start(t, []string{"r1"}, fetch.DefaultGatherConfig(t.TempDir()))
	if err := f.incomings.AddPlacements(f.net.source, f.open.ID, f.placements); err != nil {
		t.Fatal(err)
	}
	if local.Has(f.root) {
		t.Fatal("the manifest is here before it was built: the test proves nothing")
	}
	wrong := chunk.Sum([]byte("not this manifest"))
	if err := f.incomings.Finish(f.net.source, f.open.ID, wrong, true); !errors.Is(err, fetch.ErrManifestNeeded) {
		t.Fatalf("a root the placements do not build: %v, want ErrManifestNeeded", err)
	}
	if err := f.incomings.Finish(f.net.source, f.open.ID, f.root, true); err != nil {
		t.Fatal(err)
	}
	if !local.Has(f.root) {
		t.Fatal("the manifest built here was not stored")
	}
	if err := g.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, g, f.data)
}

// A gather renews every holder's lease on the migration's chunks while it
// runs (here: waiting for placements that do not come), and stops when it
// ends.
func TestGatherRenewsHoldersWhileItRuns(t *testing.T) {
	net := newGnet("src")
	holders := []string{"dst-store", "r1", "r2"}
	for _, h := range holders {
		net.peer(h, time.Millisecond)
	}
	local, _ := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 30})
	f := newFixture(t, net, local, smallSpec(1), func(chunk.ID) []uint8 { return []uint8{1} }, holders)
	cfg := fetch.DefaultGatherConfig(t.TempDir())
	cfg.RenewEvery = 20 * time.Millisecond
	_, g := f.start(t, holders, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	time.Sleep(300 * time.Millisecond)
	cancel()
	<-done
	net.mu.Lock()
	after := maps.Clone(net.renewed)
	net.mu.Unlock()
	for _, h := range holders {
		if after[h] < 3 {
			t.Fatalf("holder %s renewed %d times in 300 ms at 20 ms intervals", h, after[h])
		}
	}
	time.Sleep(100 * time.Millisecond)
	net.mu.Lock()
	defer net.mu.Unlock()
	if !maps.Equal(after, net.renewed) {
		t.Fatalf("renewals went on after the gather ended: %v, then %v", after, net.renewed)
	}
}
