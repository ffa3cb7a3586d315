package eviction

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/seal"
)

// putFile writes 4 MiB of random chunks with a zero run and a repeated
// chunk, and returns its path and bytes.
func putFile(t *testing.T) (string, []byte) {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 8))
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	clear(data[1<<20 : 1<<20+256<<10])            // 4 zero chunks of 64 KiB
	copy(data[3<<20:3<<20+64<<10], data[:64<<10]) // a duplicate chunk
	path := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, data
}

// plainRoot is the CID of data put in 64 KiB chunks under name, built
// here from the chunks' hashes.
func plainRoot(t *testing.T, name string, data []byte) chunk.ID {
	t.Helper()
	cs := 64 << 10
	var ids []chunk.ID
	for o := 0; o < len(data); o += cs {
		c := data[o:min(len(data), o+cs)]
		if chunk.IsZeroData(c) {
			ids = append(ids, chunk.Zero)
		} else {
			ids = append(ids, chunk.Sum(c))
		}
	}
	r := manifest.Region{Name: name, Kind: manifest.KindFile, Size: int64(len(data)), ChunkSize: cs}
	if _, err := manifest.Build(&r, ids); err != nil {
		t.Fatal(err)
	}
	m := manifest.Manifest{Name: name, Regions: []manifest.Region{r}}
	return chunk.Sum(m.Encode())
}

// The same content put twice, hashed on several goroutines, gets the one
// CID that its chunks' hashes name, and each target holds every distinct
// chunk once.
func TestPutCIDIsTheContents(t *testing.T) {
	c := newFakeCluster("a", "b")
	path, data := putFile(t)
	want := plainRoot(t, "in", data)
	for range 2 {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultPutConfig()
		cfg.Name, cfg.Hashers = "in", 4
		res, err := Put(t.Context(), c, []string{"a", "b"}, f, int64(len(data)), cfg, nil)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if res.Root != want {
			t.Fatalf("root %s, want %s", res.Root, want)
		}
		if res.Chunks != 64 || res.ZeroChunks != 4 || res.DupChunks != 1 || res.UniqueBytes != 59*64<<10 {
			t.Fatalf("counted %d chunks, %d zero, %d dup, %d unique bytes", res.Chunks, res.ZeroChunks, res.DupChunks, res.UniqueBytes)
		}
		for _, p := range []string{"a", "b"} {
			if got := res.SentBytes[p]; got != res.UniqueBytes+res.ManifestBytes {
				t.Fatalf("%s acked %d bytes, want %d", p, got, res.UniqueBytes+res.ManifestBytes)
			}
		}
	}
	if n := c.stores["a"].Stats().Chunks; n != 59+2 { // the chunks, a block and the root
		t.Fatalf("a holds %d chunks, want 61", n)
	}
}

// shrinkingFile is a file truncated to size just after its first read.
type shrinkingFile struct {
	f    *os.File
	size int64
	once sync.Once
	err  error
}

func (s *shrinkingFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := s.f.ReadAt(p, off)
	s.once.Do(func() { s.err = s.f.Truncate(s.size) })
	return n, err
}

// A file that shrinks while it is put fails the put with ErrFileChanged:
// the stale tail of a reused read buffer is never hashed into a CID, no
// manifest reaches the target, and what it holds is the file's own bytes.
func TestPutShrinkingFileFails(t *testing.T) {
	c := newFakeCluster("a")
	path, data := putFile(t)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in := &shrinkingFile{f: f, size: 2<<20 + 512<<10} // ends mid-span
	res, err := Put(t.Context(), c, []string{"a"}, in, int64(len(data)), DefaultPutConfig(), nil)
	if in.err != nil {
		t.Fatal(in.err)
	}
	if !errors.Is(err, ErrFileChanged) || res != nil {
		t.Fatalf("got %+v, %v; want ErrFileChanged", res, err)
	}
	if strings.Contains(err.Error(), "--") {
		t.Fatalf("error names a flag: %v", err)
	}
	mine := map[chunk.ID]bool{}
	for o := 0; o < len(data); o += 64 << 10 {
		mine[chunk.Sum(data[o:o+64<<10])] = true
	}
	c.stores["a"].Range(func(id chunk.ID, _ int) bool {
		if !mine[id] {
			t.Errorf("the target holds %s, no chunk of the file (a manifest, or stale bytes)", id.Short())
		}
		return true
	})
}

// A sealed put stores only ciphertext, and its manifest, opened with the
// put's secret, names chunks that open to the file's bytes.
func TestPutSealed(t *testing.T) {
	c := newFakeCluster("a")
	path, data := putFile(t)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg := DefaultPutConfig()
	cfg.Name, cfg.Seal = "in", true
	res, err := Put(t.Context(), c, []string{"a"}, f, int64(len(data)), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Secret.IsZero() || res.Root == plainRoot(t, "in", data) {
		t.Fatal("a sealed put has no secret, or the plain CID")
	}
	st := c.stores["a"]
	get := func(id chunk.ID) []byte {
		b, err := st.Get(id, nil)
		if err != nil {
			t.Fatalf("chunk %s: %v", id.Short(), err)
		}
		return b
	}
	m, err := manifest.Decode(get(res.Root))
	if err != nil || !m.Sealed || len(m.Regions) != 1 {
		t.Fatalf("root: %+v, %v", m, err)
	}
	r := m.Regions[0]
	var ids, plains []chunk.ID
	for n, b := range r.Blocks {
		if ids, err = manifest.DecodeBlock(get(b), ids); err != nil {
			t.Fatal(err)
		}
		if plains, err = manifest.OpenKeyBlock(get(r.KeyBlocks[n]), res.Secret, 0, n, plains); err != nil {
			t.Fatal(err)
		}
	}
	cs := r.ChunkSize
	for i, id := range ids {
		want := data[i*cs : (i+1)*cs]
		if id.IsZero() {
			if !chunk.IsZeroData(want) {
				t.Fatalf("chunk %d listed as zero", i)
			}
			continue
		}
		sealed := get(id)
		if bytes.Equal(sealed, want) {
			t.Fatalf("chunk %d is stored in plaintext", i)
		}
		open := make([]byte, len(sealed))
		seal.Chunk(open, sealed, plains[i])
		if !bytes.Equal(open, want) {
			t.Fatalf("chunk %d does not open to the file's bytes", i)
		}
	}
}
