package fetch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/seal"
	"github.com/sgrelay/sg/internal/wire"
)

// Config configures Get.
type Config struct {
	BatchChunks int // chunks per Get request
	Window      int // requests in flight per holder
	MaxHolders  int // holders fetched from at once
}

// DefaultConfig asks for 16 chunks per request, 4 requests in flight per
// holder, from up to 3 holders.
func DefaultConfig() Config { return Config{BatchChunks: 16, Window: 4, MaxHolders: 3} }

// Progress is reported while Get runs.
type Progress struct {
	BytesDone int64 // bytes of the output written or known zero
	Total     int64
}

// Result describes a finished Get.
type Result struct {
	Size         int64
	Chunks       int64
	ZeroChunks   int64
	LocalChunks  int64            // chunks copied from the local store, not fetched
	Fetched      map[string]int64 // chunk bytes fetched, per holder
	Retried      int64            // chunks asked again of another holder
	Duration     time.Duration
	ManifestName string
}

// Errors of a manifest Get cannot write as one file.
var (
	ErrSealed     = errors.New("the manifest is sealed: gather it with its secret")
	ErrNotOneFile = errors.New("the manifest has more than one region: gather it")
)

// progressEvery is how often Get reports progress.
const progressEvery = 200 * time.Millisecond

// Get fetches the single-region manifest rooted at root into the file
// output: a gather of the manifest into a directory beside output (so
// nothing that looks complete exists before the end), whose one file is
// read back against the manifest and renamed to output. Only chunks not
// in local are fetched; none are stored there (the file is the copy).
// progress may be nil; it is called from Get's goroutine.
func Get(ctx context.Context, net Network, holders []Holder, local LocalStore, root chunk.ID, output string, cfg Config, progress func(Progress)) (*Result, error) {
	if len(holders) == 0 {
		return nil, errors.New("get: no holders")
	}
	start := time.Now()
	holders = slices.Clone(holders)
	slices.SortStableFunc(holders, func(a, b Holder) int { return cmp.Compare(rttKey(a.RTT), rttKey(b.RTT)) })
	if len(holders) > cfg.MaxHolders {
		holders = holders[:cfg.MaxHolders]
	}
	m, err := ResolveManifest(ctx, net, holders, local, root, seal.Secret{})
	switch {
	case err != nil:
		return nil, fmt.Errorf("get: %w", err)
	case m.Sealed:
		return nil, fmt.Errorf("get %s: %w", root, ErrSealed)
	case len(m.Regions) != 1:
		return nil, fmt.Errorf("get %s: %d regions: %w", root, len(m.Regions), ErrNotOneFile)
	}
	reg := m.Regions[0]
	res := &Result{Size: reg.Size, Chunks: int64(len(m.IDs[0])), ManifestName: m.Name}
	for _, id := range m.IDs[0] {
		if id.IsZero() {
			res.ZeroChunks++
		}
	}

	dir, err := os.MkdirTemp(filepath.Dir(output), "."+filepath.Base(output)+".partial-")
	if err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	defer os.RemoveAll(dir)
	rep, err := gatherFile(ctx, net, holders, local, root, m, dir, cfg, progress)
	if err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	f, err := os.Open(rep.Paths[0])
	if err == nil {
		err = verifyOutput(f, reg, m.IDs[0])
		f.Close()
	}
	if err == nil {
		err = os.Rename(rep.Paths[0], output)
	}
	if err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	res.LocalChunks, res.Fetched, res.Retried = rep.LocalChunks, rep.FetchedBytes, rep.Retried
	res.Duration = time.Since(start)
	if progress != nil {
		progress(Progress{BytesDone: reg.Size, Total: reg.Size})
	}
	return res, nil
}

// gatherFile gathers m into dir with a Gatherer of its own, not known to
// any other on this node: its one region under a fixed name (the
// manifest's may be any file name), no source, nothing released.
func gatherFile(ctx context.Context, net Network, holders []Holder, local LocalStore, root chunk.ID, m *Resolved, dir string, cfg Config, progress func(Progress)) (Report, error) {
	file := *m
	mm := *m.Manifest
	mm.Name, mm.Regions = "get", slices.Clone(mm.Regions)
	mm.Regions[0].Name = "file"
	file.Manifest = &mm
	peers := make([]string, len(holders))
	rtts := map[string]time.Duration{}
	for i, h := range holders {
		peers[i], rtts[h.Peer] = h.Peer, h.RTT
	}
	st := readOnlyStore{local}
	ins := NewIncomings(st)
	in, err := ins.OpenFromManifest(root, &file, seal.Secret{}, peers)
	if err != nil {
		return Report{}, err
	}
	gcfg := DefaultGatherConfig(dir)
	gcfg.NoRelease, gcfg.RenewEvery = true, 0
	gcfg.PrefetchBatch, gcfg.PrefetchWindow = cfg.BatchChunks, cfg.Window
	g, err := NewGatherer(in, getNet{net, rtts}, st, gcfg)
	if err != nil {
		return Report{}, err
	}
	defer g.Close()
	in.SetListener(g)
	if err := ins.PlaceManifest(in, &file, root); err != nil {
		return Report{}, err
	}
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = g.Run(ctx) })
	t := time.NewTicker(progressEvery)
	defer t.Stop()
	for done := false; !done; {
		select {
		case <-g.Done():
			done = true
		case <-ctx.Done():
			done = true
		case <-t.C:
			if progress != nil {
				rep := g.Report()
				progress(Progress{BytesDone: min(rep.ChunksPresent*int64(m.Regions[0].ChunkSize), m.Regions[0].Size), Total: m.Regions[0].Size})
			}
		}
	}
	wg.Wait() // Run syncs the file after Done
	return g.Report(), runErr
}

// getNet is the Network a get's gather needs: no source to read by
// position (a put has none), holders' RTTs as Get was told them, and no
// releases or renewals (NoRelease, RenewEvery 0: never called).
type getNet struct {
	Network
	rtts map[string]time.Duration
}

var errNoSource = errors.New("a get has no source to read by position")

func (n getNet) OpenDemand(context.Context, string, int) (Demander, error) { return nil, errNoSource }
func (n getNet) RTT(peer string) (time.Duration, bool)                     { d := n.rtts[peer]; return d, d > 0 }
func (n getNet) Zone(string) string                                        { return "" }
func (n getNet) Release(context.Context, string, wire.Release) error       { return nil }
func (n getNet) Renew(context.Context, string, wire.MigrationID) error     { return nil }

// readOnlyStore is the local store as a get's gather sees it: chunks in
// it are copied, never fetched; fetched chunks are not added (the output
// file holds them) and nothing is pinned.
type readOnlyStore struct{ LocalStore }

var errNotKept = errors.New("a get keeps no chunk in the store")

func (s readOnlyStore) Has(id chunk.ID) bool {
	if h, ok := s.LocalStore.(interface{ Has(chunk.ID) bool }); ok {
		return h.Has(id)
	}
	_, err := s.Get(id, nil)
	return err == nil
}
func (readOnlyStore) Put(chunk.ID, []byte) error { return errNotKept }
func (readOnlyStore) Pin(string, ...chunk.ID)    {}
func (readOnlyStore) Unpin(string) int           { return 0 }

// rttKey orders measured RTTs ascending and unmeasured (0) ones last.
func rttKey(d time.Duration) time.Duration {
	if d == 0 {
		return math.MaxInt64
	}
	return d
}

// verifyOutput re-reads the written output and checks every chunk against
// the manifest, so a write the disk garbled is caught here, not by the VM.
func verifyOutput(out io.ReaderAt, reg manifest.Region, ids []chunk.ID) error {
	buf := make([]byte, reg.ChunkSize)
	for i, id := range ids {
		off := int64(i) * int64(reg.ChunkSize)
		n := int(min(int64(reg.ChunkSize), reg.Size-off))
		if _, err := out.ReadAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("verify output at %d: %w", off, err)
		}
		ok := chunk.Verify(id, buf[:n])
		if id.IsZero() {
			ok = chunk.IsZeroData(buf[:n])
		}
		if !ok {
			return fmt.Errorf("verify output: chunk %d at offset %d does not match the manifest", i, off)
		}
	}
	return nil
}
