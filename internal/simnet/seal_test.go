package simnet

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/workload"
)

// sharedBaseVM is a 16 MiB guest of base image 7: half its pages are the
// base's.
func sharedBaseVM(i int) VMSpec {
	return VMSpec{Name: fmt.Sprintf("vm%d", i), Spec: workload.Spec{Seed: uint64(20 + i), BaseSeed: 7,
		MemSize: 16 << 20, PageSize: 4096, ZeroFrac: 0.2, SharedFrac: 0.5, RepeatFrac: 0.05}}
}

// plaintextPages indexes every non-zero page of the VMs: by hash, and by
// its first 32 bytes (a scan for known plaintext that a chunk shifted or
// cut would not escape either).
func plaintextPages(t testing.TB, vms []VMSpec) (map[chunk.ID]bool, map[[32]byte]bool) {
	t.Helper()
	ids, prefixes := map[chunk.ID]bool{}, map[[32]byte]bool{}
	for _, v := range vms {
		page := make([]byte, v.PageSize)
		for off := int64(0); off < v.MemSize; off += int64(v.PageSize) {
			if _, err := v.Memory().ReadAt(page, off); err != nil && !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			if !chunk.IsZeroData(page) {
				ids[chunk.Sum(page)] = true
				prefixes[[32]byte(page)] = true
			}
		}
	}
	return ids, prefixes
}

// Encryption at rest: two VMs of one base evicted together with
// --encrypt through two relays. The destination gathers both byte for
// byte (demand reads included); the shared pages still travel once; no
// relay stores a plaintext page. A third VM of the base, evicted later
// under another secret, finds the shared pages already at the
// destination: sealing converges across evictions.
func TestEncryptedAtRest(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		topo := &Topology{
			Nodes: []NodeSpec{
				{Name: "src", Role: Source, UpMbps: 1000, DownMbps: 1000},
				{Name: "dst", Role: Destination, UpMbps: 1000, DownMbps: 150},
				{Name: "mid1", Role: Intermediate, UpMbps: 1000, DownMbps: 1000},
				{Name: "mid2", Role: Intermediate, UpMbps: 1000, DownMbps: 1000},
			},
			Latency: LatencySpec{Default: Duration(time.Millisecond)},
			VMs:     []VMSpec{sharedBaseVM(0), sharedBaseVM(1)},
			Evict:   EvictSpec{Encrypt: true},
			Gather:  GatherSpec{Verify: true, KeepHolders: true, Trace: TraceSpec{Reads: 100, Think: Duration(time.Millisecond)}},
			Seed:    5,
		}
		c, res := runCluster(t, topo)
		if !res.Verified {
			t.Fatal("gathered VMs not verified")
		}
		var chunkBytes int64
		for _, n := range res.Evict.SentBytes {
			chunkBytes += n
		}
		chunkBytes -= res.Evict.ManifestPushed
		t.Logf("ET %s TMT %s; unique %d KiB, pushed %d KiB (+%d KiB endgame spares), %d chunks shared across the VMs",
			ms(res.ET), ms(res.TMT), res.UniqueBytes>>10, chunkBytes>>10, res.Evict.EndgameBytes>>10, res.Evict.DupAcross)
		if res.Evict.DupAcross == 0 || res.Evict.UniqueBytes != res.UniqueBytes {
			t.Fatalf("sealed eviction counted %d unique bytes (plaintext: %d) and %d shared chunks: sealing broke dedup",
				res.Evict.UniqueBytes, res.UniqueBytes, res.Evict.DupAcross)
		}
		// The guest's demand reads may fetch a chunk from the source before
		// it is pushed; the destination then holds it and it is not sent.
		// Every chunk here is one page.
		fetchedFirst := res.Evict.AlreadyHeld * int64(topo.VMs[0].PageSize)
		if chunkBytes < res.UniqueBytes-fetchedFirst || chunkBytes > res.UniqueBytes+res.Evict.EndgameBytes {
			t.Fatalf("chunk bytes acknowledged %d; want the unique %d (less %d fetched by demand first, + at most %d of spares)",
				chunkBytes, res.UniqueBytes, fetchedFirst, res.Evict.EndgameBytes)
		}

		plainIDs, prefixes := plaintextPages(t, topo.VMs)
		for _, name := range []string{"mid1", "mid2"} {
			sn := c.nodes[topo.node(name)]
			var held, plain, known int
			var buf []byte
			sn.store.Range(func(id chunk.ID, _ int) bool {
				var err error
				if buf, err = sn.store.Get(id, buf); err != nil {
					t.Errorf("%s: get %s: %v", name, id.Short(), err)
					return false
				}
				held++
				if plainIDs[id] || plainIDs[chunk.Sum(buf)] {
					plain++
				}
				if len(buf) >= 32 && prefixes[[32]byte(buf)] {
					known++
				}
				return true
			})
			t.Logf("%s holds %d chunks: %d plaintext pages, %d starting like one", name, held, plain, known)
			if held == 0 {
				t.Fatalf("%s holds nothing: the test scanned no relay data", name)
			}
			if plain > 0 || known > 0 {
				t.Errorf("%s stores %d plaintext pages and %d chunks that start like one", name, plain, known)
			}
		}

		// A later eviction, under its own secret, dedups against the first.
		c.topo.VMs = []VMSpec{sharedBaseVM(2)}
		res2, err := c.Run()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("third VM: %d chunks already at the destination, ET %s", res2.Evict.AlreadyHeld, ms(res2.ET))
		if !res2.Verified || res2.Evict.AlreadyHeld == 0 {
			t.Fatalf("third VM: verified %v, %d chunks already held: want the base's pages found", res2.Verified, res2.Evict.AlreadyHeld)
		}
	})
}
