package fetch_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/eviction"
	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/wire"
)

// fakeNet is an in-process network of memory stores. A peer may lie
// (serve wrong bytes) or be missing some chunks.
type fakeNet struct {
	mu     sync.Mutex
	stores map[string]*chunkstore.Memory
	liar   map[string]bool
	served map[string]int
}

func newFakeNet(peers ...string) *fakeNet {
	n := &fakeNet{stores: map[string]*chunkstore.Memory{}, liar: map[string]bool{}, served: map[string]int{}}
	for _, p := range peers {
		n.stores[p] = chunkstore.NewMemory(1 << 30)
	}
	return n
}

type fakePusher struct {
	n    *fakeNet
	peer string
}

func (n *fakeNet) OpenPush(_ context.Context, p string, _ wire.Hold) (eviction.Pusher, error) {
	if n.stores[p] == nil {
		return nil, errors.New("unknown peer " + p)
	}
	return &fakePusher{n, p}, nil
}

func (f *fakePusher) Push(_ context.Context, cs []wire.Chunk, done func([]wire.Status, error)) error {
	st := make([]wire.Status, len(cs))
	for i, c := range cs {
		if !chunk.Verify(c.ID, c.Data) {
			st[i] = wire.StatusBadHash
			continue
		}
		if err := f.n.stores[f.peer].Put(c.ID, c.Data); err != nil {
			st[i] = wire.StatusFull
		}
	}
	done(st, nil)
	return nil
}
func (f *fakePusher) Close() error { return nil }
func (f *fakePusher) Abort()       {}

type fakeGetter struct {
	n    *fakeNet
	peer string
}

func (n *fakeNet) OpenGet(_ context.Context, p string, _ wire.Priority, _ int) (fetch.Getter, error) {
	if n.stores[p] == nil {
		return nil, errors.New("unknown peer " + p)
	}
	return &fakeGetter{n, p}, nil
}

func (g *fakeGetter) Get(_ context.Context, ids []chunk.ID, done func([]wire.GetResult, error)) error {
	res := make([]wire.GetResult, len(ids))
	for i, id := range ids {
		d, err := g.n.stores[g.peer].Get(id, nil)
		switch {
		case err != nil:
			res[i].Status = wire.StatusMissing
		case g.n.liar[g.peer]:
			d[0] ^= 0xff
			// What node.GetStream does with bytes that do not verify.
			res[i].Status = wire.StatusBadHash
		default:
			res[i] = wire.GetResult{Status: wire.StatusOK, Data: d}
			g.n.mu.Lock()
			g.n.served[g.peer]++
			g.n.mu.Unlock()
		}
	}
	done(res, nil)
	return nil
}
func (g *fakeGetter) Close() error { return nil }
func (g *fakeGetter) Abort()       {}

// testFile is 4 MiB + 1000 bytes: random chunks, a zero run and repeats.
func testFile(t *testing.T) (string, []byte) {
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 4<<20+1000)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	clear(data[1<<20 : 2<<20])                    // 16 zero chunks of 64 KiB
	copy(data[3<<20:3<<20+64<<10], data[:64<<10]) // a duplicate chunk
	path := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, data
}

func put(t *testing.T, net *fakeNet, targets ...string) (*eviction.PutResult, []byte) {
	t.Helper()
	path, data := testFile(t)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := eviction.Put(t.Context(), net, targets, f, int64(len(data)), eviction.DefaultPutConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return res, data
}

func get(t *testing.T, net *fakeNet, root chunk.ID, holders ...string) (*fetch.Result, []byte, error) {
	t.Helper()
	var hs []fetch.Holder
	for _, h := range holders {
		hs = append(hs, fetch.Holder{Peer: h})
	}
	out := filepath.Join(t.TempDir(), "out")
	res, err := fetch.Get(t.Context(), net, hs, chunkstore.NewMemory(0), root, out, fetch.DefaultConfig(), nil)
	if err != nil {
		return nil, nil, err
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return res, got, nil
}

func TestPutThenGet(t *testing.T) {
	net := newFakeNet("a", "b", "c")
	pr, data := put(t, net, "a", "b")
	if pr.ZeroChunks != 16 || pr.DupChunks != 1 || pr.Chunks != 65 {
		t.Fatalf("put counted %d chunks, %d zero, %d dup; want 65, 16, 1", pr.Chunks, pr.ZeroChunks, pr.DupChunks)
	}
	wantUnique := int64(len(data)) - 16*64<<10 - 64<<10
	if pr.UniqueBytes != wantUnique {
		t.Fatalf("unique bytes %d, want %d", pr.UniqueBytes, wantUnique)
	}
	for _, p := range []string{"a", "b"} {
		if got := pr.SentBytes[p]; got != wantUnique+pr.ManifestBytes {
			t.Fatalf("%s acked %d bytes, want %d", p, got, wantUnique+pr.ManifestBytes)
		}
	}
	if net.stores["c"].Stats().Chunks != 0 {
		t.Fatal("a non-target received chunks")
	}
	gr, got, err := get(t, net, pr.Root, "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("fetched file differs")
	}
	if gr.ZeroChunks != 16 {
		t.Fatalf("get saw %d zero chunks", gr.ZeroChunks)
	}
}

func TestGetFallsBackFromLiarAndMissingHolder(t *testing.T) {
	net := newFakeNet("liar", "empty", "good")
	pr, data := put(t, net, "liar", "good")
	net.liar["liar"] = true
	_, got, err := get(t, net, pr.Root, "liar", "empty", "good")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("fetched file differs")
	}
	if net.served["liar"] != 0 || net.served["good"] == 0 {
		t.Fatalf("served: %v", net.served)
	}
}

func TestGetFailsWhenNoHolderHasIt(t *testing.T) {
	net := newFakeNet("a", "b")
	pr, _ := put(t, net, "a")
	// Drop one data chunk from the only holder.
	var victim chunk.ID
	net.stores["a"].Range(func(id chunk.ID, size int) bool {
		if size == 64<<10 {
			victim = id
			return false
		}
		return true
	})
	net.stores["a"].Delete(victim)
	if _, _, err := get(t, net, pr.Root, "a", "b"); !errors.Is(err, fetch.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

func TestPutRejectedChunkFails(t *testing.T) {
	net := newFakeNet("tiny")
	net.stores["tiny"] = chunkstore.NewMemory(100 << 10)
	path, data := testFile(t)
	f, _ := os.Open(path)
	defer f.Close()
	_, err := eviction.Put(t.Context(), net, []string{"tiny"}, f, int64(len(data)), eviction.DefaultPutConfig(), nil)
	if !errors.Is(err, eviction.ErrRejected) {
		t.Fatalf("err = %v, want ErrRejected", err)
	}
}

// A get writes beside its output and renames at the end: a failed one
// leaves nothing in the directory, and neither kind adds the fetched
// chunks to the local store (the file is the copy).
func TestGetLeavesOnlyItsOutput(t *testing.T) {
	net := newFakeNet("a")
	pr, data := put(t, net, "a")
	hs := []fetch.Holder{{Peer: "a"}}
	local := chunkstore.NewMemory(1 << 30)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	if _, err := fetch.Get(t.Context(), net, hs, local, pr.Root, out, fetch.DefaultConfig(), nil); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("output: %v, equal %v", err, bytes.Equal(got, data))
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("the directory holds %d entries, want the output only", len(ents))
	}
	if n := local.Stats().Chunks; n != 2 { // the manifest's root and block
		t.Fatalf("the local store holds %d chunks, want the manifest's 2", n)
	}

	var victim chunk.ID
	net.stores["a"].Range(func(id chunk.ID, size int) bool {
		if size == 64<<10 {
			victim = id
			return false
		}
		return true
	})
	net.stores["a"].Delete(victim)
	failed := filepath.Join(dir, "failed")
	if _, err := fetch.Get(t.Context(), net, hs, chunkstore.NewMemory(0), pr.Root, failed, fetch.DefaultConfig(), nil); !errors.Is(err, fetch.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("after a failed get the directory holds %d entries, want the first output only", len(ents))
	}
}

// A sealed put cannot be got without its secret: Get says so before it
// writes anything.
func TestGetRefusesSealedPut(t *testing.T) {
	net := newFakeNet("a")
	path, data := testFile(t)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg := eviction.DefaultPutConfig()
	cfg.Seal = true
	pr, err := eviction.Put(t.Context(), net, []string{"a"}, f, int64(len(data)), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, err = fetch.Get(t.Context(), net, []fetch.Holder{{Peer: "a"}}, chunkstore.NewMemory(0), pr.Root, filepath.Join(dir, "out"), fetch.DefaultConfig(), nil)
	if !errors.Is(err, fetch.ErrSealed) {
		t.Fatalf("err = %v, want ErrSealed", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a refused get left %d entries", len(ents))
	}
}
