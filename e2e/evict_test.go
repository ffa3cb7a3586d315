package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/lab"
	"github.com/sgrelay/sg/internal/workload"
)

// vmSpec is the test VM: 256 MiB memory + 128 MiB disk, 30% zero
// pages, 20% shared with other VMs of base 42, 10% repeated within.
func vmSpec(seed uint64) workload.Spec {
	return workload.Spec{Seed: seed, BaseSeed: 42, MemSize: 256 << 20, DiskSize: 128 << 20,
		PageSize: 4096, DiskBlock: 65536, ZeroFrac: 0.3, SharedFrac: 0.2, RepeatFrac: 0.1}
}

// addVM generates a VM's images, registers them on n and returns their paths.
func addVM(t *testing.T, ctx context.Context, n *lab.Node, name string, spec workload.Spec) []string {
	t.Helper()
	dir := t.TempDir()
	mem, disk := filepath.Join(dir, name+".mem"), filepath.Join(dir, name+".disk")
	if err := spec.WriteFiles(mem, disk); err != nil {
		t.Fatal(err)
	}
	args := []string{"vm", "add", name, "--mem", mem}
	images := []string{mem}
	if spec.DiskSize > 0 {
		args = append(args, "--disk", disk)
		images = append(images, disk)
	}
	if _, err := n.Sgctl(ctx, args...); err != nil {
		t.Fatal(err)
	}
	return images
}

// waitGathered waits (two minutes at most) until the destination's gather
// of vm is complete and returns its migration record.
func waitGathered(t *testing.T, ctx context.Context, dst *lab.Node, vm string) api.Migration {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	m, err := dst.WaitGathered(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// sameFiles asserts that the materialized files equal the source images.
func sameFiles(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d files materialized, want %d", len(got), len(want))
	}
	for i := range want {
		a, err := os.ReadFile(got[i])
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(want[i])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("materialized %s differs from source %s", got[i], want[i])
		}
	}
}

// uniqueBytes is the bytes of distinct non-zero chunks of VMs of one base.
func uniqueBytes(specs ...workload.Spec) int64 {
	var total int64
	for i, s := range specs {
		mem, disk := s.Count()
		total += (mem.Unique+mem.DistinctRepeated)*int64(s.PageSize) + (disk.Unique+disk.DistinctRepeated)*int64(s.DiskBlock)
		if i == 0 { // shared pages travel once for all VMs of the base
			total += mem.Shared*int64(s.PageSize) + disk.Shared*int64(s.DiskBlock)
		}
	}
	return total
}

// received sums what each node stored from pushes, from its metrics.
func received(t *testing.T, ctx context.Context, nodes []*lab.Node) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, n := range nodes {
		v, err := n.Metric(ctx, "sg_node_push_received_bytes_total")
		if err != nil {
			v = 0 // never received a push: the counter has no sample yet
		}
		out[n.PeerID] = int64(v)
	}
	return out
}

func sum(m map[string]int64) int64 {
	var s int64
	for _, v := range m {
		s += v
	}
	return s
}

func verify(t *testing.T, ctx context.Context, n *lab.Node, cid string, replicas int) api.VerifyResult {
	t.Helper()
	var v api.VerifyResult
	if err := n.SgctlJSON(ctx, &v, "verify", cid, "--fetch", "--replicas", fmt.Sprint(replicas)); err != nil {
		t.Fatalf("verify %s: %v", cid, err)
	}
	// Copies released by a finished gather between the count and the
	// fetch "vanish"; none may be bad.
	if v.MinHolders < replicas || v.BadCopies != 0 || v.CopiesFetched+v.Vanished < v.DistinctChunks*int64(replicas) {
		t.Fatalf("verify %s: %+v", cid, v)
	}
	return v
}

func TestEvictFiveNodes(t *testing.T) {
	c := startCluster(t, "src", "dst", "r1", "r2", "r3")
	src, dst := c.Nodes[0], c.Nodes[1]
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	spec := vmSpec(1)
	images := addVM(t, ctx, src, "web1", spec)

	before := received(t, ctx, c.Nodes)
	var res api.EvictResult
	if err := src.SgctlJSON(ctx, &res, "evict", "vm", "web1", "--to", dst.PeerID); err != nil {
		t.Fatal(err)
	}
	got := received(t, ctx, c.Nodes)
	pushed := sum(got) - sum(before)
	mem, disk := spec.Count()

	// The report adds up.
	if res.Bytes != 384<<20 || res.Chunks != mem.Pages+disk.Pages || res.ZeroChunks != mem.Zero+disk.Zero {
		t.Fatalf("report: %d bytes, %d chunks, %d zero; want %d, %d, %d", res.Bytes, res.Chunks, res.ZeroChunks, 384<<20, mem.Pages+disk.Pages, mem.Zero+disk.Zero)
	}
	if res.Chunks != res.ZeroChunks+res.UniqueChunks+res.DupWithin+res.DupAcross {
		t.Fatalf("report: chunks %d ≠ zero + unique + duplicates", res.Chunks)
	}
	if res.UniqueBytes != uniqueBytes(spec) {
		t.Fatalf("unique bytes %d, want %d", res.UniqueBytes, uniqueBytes(spec))
	}
	// No zero chunk crossed the network, and each distinct non-zero chunk
	// crossed it once, but for the spare copies of the endgame (reported):
	// the receivers' own counters say so.
	if want := res.UniqueBytes + res.ManifestPushed; pushed < want || pushed > want+res.EndgameBytes {
		t.Fatalf("receivers stored %d bytes by push; want unique %d + manifest %d (+ at most endgame %d)", pushed, res.UniqueBytes, res.ManifestPushed, res.EndgameBytes)
	}
	for _, n := range c.Nodes[1:] {
		if d := got[n.PeerID] - before[n.PeerID]; d < res.SentBytes[n.PeerID] || d > res.SentBytes[n.PeerID]+res.EndgameBytes {
			t.Fatalf("%s received %d bytes, the report says %d acknowledged (endgame %d)", n.Name, d, res.SentBytes[n.PeerID], res.EndgameBytes)
		}
	}
	if got[src.PeerID] != before[src.PeerID] {
		t.Fatal("the source received pushes")
	}
	// Every chunk the manifest names is held and verifies.
	verify(t, ctx, src, res.VMs[0].Manifest, 1)

	// The destination learned the migration and its manifest, gathered
	// the VM, and its files are the source's images byte for byte.
	m := waitGathered(t, ctx, dst, "web1")
	if m.Manifest != res.VMs[0].Manifest || m.Placed != res.Chunks-res.ZeroChunks {
		t.Fatalf("destination: manifest %s (want %s), %d placed (want %d)", m.Manifest, res.VMs[0].Manifest, m.Placed, res.Chunks-res.ZeroChunks)
	}
	sameFiles(t, m.Gather.Files, images)
	// The intermediates were told to free the migration's chunks, and did.
	var freed float64
	for _, n := range c.Nodes[2:] {
		v, _ := n.Metric(ctx, "sg_node_released_chunks_total")
		freed += v
	}
	if freed == 0 {
		t.Fatal("no intermediate freed the migration's chunks after the gather")
	}
	t.Logf("TMT %v; gather: %d local chunks, fetched %v; intermediates freed %.0f chunks",
		m.Gather.TMT, m.Gather.LocalChunks, m.Gather.FetchedBytes, freed)
	t.Logf("ET %v for %d MiB (%d MiB unique): effective %.0f MB/s; per target %v",
		res.ET, res.Bytes>>20, res.UniqueBytes>>20, res.EffectiveRate/1e6, res.SentBytes)
}

func TestEvictTwoVMsOfOneBaseTogether(t *testing.T) {
	c := startCluster(t, "src", "dst", "r1")
	src, dst := c.Nodes[0], c.Nodes[1]
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	a, b := vmSpec(1), vmSpec(2)
	a.MemSize, a.DiskSize, b.MemSize, b.DiskSize = 64<<20, 32<<20, 64<<20, 32<<20
	addVM(t, ctx, src, "a", a)
	addVM(t, ctx, src, "b", b)

	before := received(t, ctx, c.Nodes)
	var res api.EvictResult
	if err := src.SgctlJSON(ctx, &res, "evict", "vm", "a", "b", "--to", dst.PeerID); err != nil {
		t.Fatal(err)
	}
	pushed := sum(received(t, ctx, c.Nodes)) - sum(before)
	want := uniqueBytes(a, b) + res.ManifestPushed
	if pushed < want || pushed > want+res.EndgameBytes {
		t.Fatalf("receivers stored %d bytes; shared chunks travelling once means %d (+ at most endgame %d)", pushed, want, res.EndgameBytes)
	}
	memA, diskA := a.Count()
	if res.DupAcross != memA.Shared+diskA.Shared {
		t.Fatalf("%d duplicates across VMs, want the %d shared chunks", res.DupAcross, memA.Shared+diskA.Shared)
	}
	for _, v := range res.VMs {
		verify(t, ctx, src, v.Manifest, 1)
	}
}

func TestEvictTwoReplicas(t *testing.T) {
	c := startCluster(t, "src", "dst", "r1", "r2")
	src, dst := c.Nodes[0], c.Nodes[1]
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	spec := vmSpec(3)
	spec.MemSize, spec.DiskSize = 64<<20, 32<<20
	addVM(t, ctx, src, "web1", spec)
	var res api.EvictResult
	if err := src.SgctlJSON(ctx, &res, "evict", "vm", "web1", "--to", dst.PeerID, "--replicas", "2"); err != nil {
		t.Fatal(err)
	}
	v := verify(t, ctx, src, res.VMs[0].Manifest, 2)
	t.Logf("holders: %v", v.Holders)
}

func TestEvictSurvivesKilledIntermediate(t *testing.T) {
	// The destination keeps its gathered chunks in its store: verify
	// below runs after r1 is gone, by when the gather may be complete, and
	// a gathered VM's chunks otherwise live only in its files.
	c := startClusterWith(t, map[string][]string{"dst": {"--keep-gathered-chunks"}}, "src", "dst", "r1", "r2", "r3")
	src, dst, victim := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	addVM(t, ctx, src, "web1", vmSpec(4))

	type outcome struct {
		res api.EvictResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		var o outcome
		o.err = src.SgctlJSON(ctx, &o.res, "evict", "vm", "web1", "--to", dst.PeerID)
		done <- o
	}()
	// Kill r1 once it holds part of the VM.
	for {
		v, _ := victim.Metric(ctx, "sg_node_push_received_bytes_total")
		if v >= 4<<20 {
			break
		}
		select {
		case o := <-done:
			t.Fatalf("the eviction ended (err %v) before r1 received 4 MiB: nothing was killed mid-scatter", o.err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	o := <-done
	if o.err != nil {
		t.Fatalf("eviction failed after an intermediate was killed: %v", o.err)
	}
	// Every chunk is held by a live peer (verify asks connected peers only).
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ps []api.Peer
		if err := src.SgctlJSON(ctx, &ps, "peers"); err != nil {
			t.Fatal(err)
		}
		gone := true
		for _, p := range ps {
			if p.ID == victim.PeerID && p.Connected {
				gone = false
			}
		}
		if gone || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	verify(t, ctx, src, o.res.VMs[0].Manifest, 1)
	t.Logf("ET %v; repaired %d chunks; sent %v", o.res.ET, o.res.Repaired, o.res.SentBytes)
}

// TestEvictImageTruncatedMidway truncates the memory image while it is
// being evicted: the eviction fails with a clear error, and the
// destination's migration fails too: nothing there claims to be complete.
func TestEvictImageTruncatedMidway(t *testing.T) {
	c := startCluster(t, "src", "dst", "r1")
	src, dst := c.Nodes[0], c.Nodes[1]
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	images := addVM(t, ctx, src, "web1", vmSpec(11))
	go func() { // owned by the test: ends after one truncate
		time.Sleep(time.Second)
		if err := os.Truncate(images[0], 64<<20); err != nil {
			t.Error(err)
		}
	}()
	out, err := src.Sgctl(ctx, "evict", "vm", "web1", "--to", dst.PeerID, "--max-rate", "100Mbit")
	if err == nil || !strings.Contains(err.Error()+string(out), "changed during the eviction") {
		t.Fatalf("evict of a truncated image: %v\n%s", err, out)
	}
	m, err := dst.WaitGathered(ctx, "web1")
	if err == nil || m.State != api.StateFailed || !strings.Contains(m.Error, "abandoned") {
		t.Fatalf("destination after an abandoned migration: %v, %+v", err, m)
	}
	if m.Gather != nil && m.Gather.Complete {
		t.Fatal("the destination claims the VM is complete")
	}
}

// A destination that can take more than its even share of the source's
// uplink, with relays that can take all the source sends (each node says
// its rates: --uplink, --downlink, or --ingest-rate), gathers from the
// relays while the scatter still runs; without the source's uplink known
// it waits for the scatter to end. Both end byte for byte.
func TestEvictFastDestinationPullsDuringScatter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		uplink []string
		pulled bool
	}{
		{"source says its uplink", []string{"--uplink", "500Mbit"}, true},
		{"source does not say", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			relay := []string{"--downlink", "1Gbit"}
			c := startClusterWith(t, map[string][]string{
				"src": tc.uplink, "dst": {"--ingest-rate", "400Mbit"}, "r1": relay, "r2": relay,
			}, "src", "dst", "r1", "r2")
			src, dst := c.Nodes[0], c.Nodes[1]
			ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
			defer cancel()
			spec := vmSpec(5)
			spec.MemSize, spec.DiskSize = 64<<20, 32<<20
			images := addVM(t, ctx, src, "web1", spec)
			var res api.EvictResult
			if err := src.SgctlJSON(ctx, &res, "evict", "vm", "web1", "--to", dst.PeerID); err != nil {
				t.Fatal(err)
			}
			m := waitGathered(t, ctx, dst, "web1")
			g := m.Gather
			t.Logf("ET %v, TMT %v; pulled during the scatter: %v, %d KiB prefetched before the source was done; per holder %v",
				res.ET, g.TMT, g.Pulled, g.PrefetchedDuringScatter>>10, g.FetchedBytes)
			if g.Pulled != tc.pulled {
				t.Fatalf("the destination was told to pull during the scatter: %v, want %v", g.Pulled, tc.pulled)
			}
			if tc.pulled != (g.PrefetchedDuringScatter > 0) {
				t.Fatalf("%d bytes prefetched before the scatter ended (pull %v)", g.PrefetchedDuringScatter, tc.pulled)
			}
			sameFiles(t, g.Files, images)
		})
	}
}
