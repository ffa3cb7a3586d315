package fetch

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/seal"
	"github.com/sgrelay/sg/internal/wire"
)

// Pinner protects chunks a migration needs from GC (chunkstore.Store).
type Pinner interface {
	Pin(owner string, ids ...chunk.ID)
	Unpin(owner string) int
}

// Incoming is a migration opened to this node: what the source has told it
// so far about the VM's regions and where each chunk is.
type Incoming struct {
	ID      wire.MigrationID
	Source  string
	VM      string
	Regions []wire.RegionInfo
	Opened  time.Time
	// Secret is set for a sealed migration: its chunks are ciphertext and
	// each placement carries the plain ID that opens it.
	Secret seal.Secret
	// PullDuringScatter: the source said its relays can take all it
	// sends, so fetching from them before the scatter ends costs it
	// nothing (wire.Open).
	PullDuringScatter bool

	mu       sync.Mutex
	ids      [][]chunk.ID        // per region, per position; zero value: not placed yet
	holders  map[chunk.ID]uint32 // holder mask per chunk
	peers    map[uint8]string    // holder index → peer
	placed   int64               // positions placed
	root     chunk.ID            // manifest root, once done
	finished time.Time           // when the source handed over the root
	changed  chan struct{}       // closed and replaced on every update
	listener IncomingListener
	removed  bool // Remove dropped its state: frames for it are refused
}

// IncomingListener hears a migration's placements and its end (a Gatherer).
type IncomingListener interface {
	Placed(ps []wire.Placement)
	Finished(root chunk.ID)
	// Abandoned: the source gave the migration up before handing over
	// its manifest (it failed, or died); it will never be complete.
	Abandoned(reason error)
}

// SetListener installs l; set it right after Open, before any placement.
func (in *Incoming) SetListener(l IncomingListener) {
	in.mu.Lock()
	in.listener = l
	in.mu.Unlock()
}

// IncomingStatus is a snapshot of an Incoming for reports.
type IncomingStatus struct {
	ID       wire.MigrationID
	Source   string
	VM       string
	Bytes    int64
	Chunks   int64 // positions in all regions
	Placed   int64 // positions whose chunk is placed
	Root     chunk.ID
	Done     bool
	Opened   time.Time
	Finished time.Time
}

// Status reports progress.
func (in *Incoming) Status() IncomingStatus {
	in.mu.Lock()
	defer in.mu.Unlock()
	st := IncomingStatus{ID: in.ID, Source: in.Source, VM: in.VM, Placed: in.placed, Root: in.root,
		Done: !in.finished.IsZero(), Opened: in.Opened, Finished: in.finished}
	for _, r := range in.Regions {
		st.Bytes += int64(r.Size)
		st.Chunks += int64((r.Size + uint64(r.ChunkSize) - 1) / uint64(r.ChunkSize))
	}
	return st
}

// Holders lists the peers that hold id, as the source reported them.
func (in *Incoming) Holders(id chunk.ID) []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	mask := in.holderMaskLocked(id)
	var out []string
	for i := range wire.MaxHolders {
		if mask&(1<<i) != 0 {
			if p, ok := in.peers[uint8(i)]; ok {
				out = append(out, p)
			}
		}
	}
	return out
}

// holderMask returns id's holder bitmask and the index → peer table (the
// table must not be modified).
func (in *Incoming) holderMask(id chunk.ID) (uint32, map[uint8]string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.holderMaskLocked(id), in.peers
}

// holderMaskLocked is id's holders as placed; for a chunk no placement
// named (known from the manifest only: a push whose IDs no holder could
// say), every declared holder, to be asked in turn.
func (in *Incoming) holderMaskLocked(id chunk.ID) uint32 {
	if mask := in.holders[id]; mask != 0 {
		return mask
	}
	var all uint32
	for i := range in.peers {
		all |= 1 << i
	}
	return all
}

// Peers lists every holder the source declared, in index order.
func (in *Incoming) Peers() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make([]string, 0, len(in.peers))
	for i := range wire.MaxHolders {
		if p, ok := in.peers[uint8(i)]; ok {
			out = append(out, p)
		}
	}
	return out
}

// At returns the chunk placed at a position, and false if none is yet.
func (in *Incoming) At(region int, index uint64) (chunk.ID, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if region < 0 || region >= len(in.ids) || index >= uint64(len(in.ids[region])) {
		return chunk.ID{}, false
	}
	id := in.ids[region][index]
	return id, !id.IsZero()
}

// Changed returns a channel closed at the next update (placement or done).
func (in *Incoming) Changed() <-chan struct{} {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.changed
}

func (in *Incoming) notifyLocked() {
	close(in.changed)
	in.changed = make(chan struct{})
}

// Incomings is every migration opened to this node.
type Incomings struct {
	store IncomingStore
	mu    sync.Mutex
	m     map[wire.MigrationID]*Incoming
}

// IncomingStore is where placed chunks are pinned and a manifest built
// here is stored (the node's chunk store).
type IncomingStore interface {
	Pinner
	Put(id chunk.ID, data []byte) error
}

// NewIncomings returns an empty set that pins placed chunks in store.
func NewIncomings(store IncomingStore) *Incomings {
	return &Incomings{store: store, m: map[wire.MigrationID]*Incoming{}}
}

// ErrManifestNeeded answers a Done that asked this destination to build
// the manifest from its placements when they do not hash to the root: the
// source is to send the manifest instead.
var ErrManifestNeeded = errors.New("the placements here do not build the manifest: send it")

// Errors a source can provoke.
var (
	ErrDuplicateMigration = errors.New("migration already open")
	ErrUnknownMigration   = errors.New("no such migration")
	ErrWrongSource        = errors.New("migration belongs to another source")
	ErrBadPlacement       = errors.New("placement outside the VM")
)

// maxPositions bounds what one Open can make us allocate (a 4 TiB VM of 4 KiB pages).
const maxPositions = 1 << 30

// Open records a new migration from source.
func (s *Incomings) Open(source string, o wire.Open) (*Incoming, error) {
	in := &Incoming{ID: o.ID, Source: source, VM: o.VM, Regions: o.Regions, Opened: time.Now(), Secret: o.Secret, PullDuringScatter: o.PullDuringScatter,
		holders: map[chunk.ID]uint32{}, peers: map[uint8]string{}, changed: make(chan struct{})}
	var total uint64
	for _, r := range o.Regions {
		n := (r.Size + uint64(r.ChunkSize) - 1) / uint64(r.ChunkSize)
		total += n
		if total > maxPositions {
			return nil, fmt.Errorf("open %s: VM too large (%d chunks)", o.ID, total)
		}
		in.ids = append(in.ids, make([]chunk.ID, n))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[o.ID]; ok {
		return nil, fmt.Errorf("open %s: %w", o.ID, ErrDuplicateMigration)
	}
	s.m[o.ID] = in
	return in, nil
}

// Get returns a migration.
func (s *Incomings) Get(id wire.MigrationID) (*Incoming, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, ok := s.m[id]
	if !ok {
		return nil, fmt.Errorf("%s: %w", id, ErrUnknownMigration)
	}
	return in, nil
}

func (s *Incomings) from(source string, id wire.MigrationID) (*Incoming, error) {
	in, err := s.Get(id)
	if err != nil {
		return nil, err
	}
	if in.Source != source {
		return nil, fmt.Errorf("%s: %w", id, ErrWrongSource)
	}
	return in, nil
}

// AddHolders records holder indices.
func (s *Incomings) AddHolders(source string, id wire.MigrationID, hs []wire.Holder) error {
	in, err := s.from(source, id)
	if err != nil {
		return err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.removed {
		return fmt.Errorf("%s: %w", id, ErrUnknownMigration)
	}
	for _, h := range hs {
		in.peers[h.Index] = h.Peer
	}
	return nil
}

// AddPlacements records where chunks are, pinning them for the migration.
func (s *Incomings) AddPlacements(source string, id wire.MigrationID, ps []wire.Placement) error {
	in, err := s.from(source, id)
	if err != nil {
		return err
	}
	pinned := make([]chunk.ID, 0, len(ps))
	in.mu.Lock()
	if in.removed {
		in.mu.Unlock()
		return fmt.Errorf("%s: %w", id, ErrUnknownMigration)
	}
	for _, p := range ps {
		if int(p.Region) >= len(in.ids) || p.Index >= uint64(len(in.ids[p.Region])) {
			in.mu.Unlock()
			return fmt.Errorf("%s: region %d index %d: %w", id, p.Region, p.Index, ErrBadPlacement)
		}
		if in.ids[p.Region][p.Index].IsZero() {
			in.placed++
		}
		in.ids[p.Region][p.Index] = p.ID
		if _, seen := in.holders[p.ID]; !seen {
			pinned = append(pinned, p.ID)
		}
		in.holders[p.ID] |= p.Holders
	}
	in.notifyLocked()
	l := in.listener
	in.mu.Unlock()
	if s.store != nil && len(pinned) > 0 {
		s.store.Pin(id.String(), pinned...)
	}
	if l != nil {
		l.Placed(ps)
	}
	return nil
}

// Finish records the manifest root: the source has reached its eviction time.
func (s *Incomings) Finish(source string, id wire.MigrationID, root chunk.ID, build bool) error {
	in, err := s.from(source, id)
	if err != nil {
		return err
	}
	if build {
		if err := s.buildManifest(in, root); err != nil {
			return err
		}
	}
	in.mu.Lock()
	if in.removed {
		in.mu.Unlock()
		return fmt.Errorf("%s: %w", id, ErrUnknownMigration)
	}
	in.root, in.finished = root, time.Now()
	in.notifyLocked()
	l := in.listener
	in.mu.Unlock()
	if s.store != nil {
		s.store.Pin(id.String(), root)
	}
	if l != nil {
		l.Finished(root)
	}
	return nil
}

// Abandon records that the source gave up an unfinished migration and
// tells its listener. A finished migration is not affected: the source
// may go once it has handed over the manifest.
func (s *Incomings) Abandon(source string, id wire.MigrationID, reason error) {
	in, err := s.from(source, id)
	if err != nil {
		return
	}
	in.mu.Lock()
	finished := !in.finished.IsZero()
	l := in.listener
	in.mu.Unlock()
	if !finished && l != nil {
		l.Abandoned(reason)
	}
}

// Remove forgets a migration that has ended (complete, failed or
// abandoned): it drops its pins and its per-position state, so a node
// that receives VMs for months holds only the migrations still open. A
// source's later frames for it are refused as unknown. It returns false
// if the migration is not open here.
func (s *Incomings) Remove(id wire.MigrationID) bool {
	s.mu.Lock()
	in, ok := s.m[id]
	delete(s.m, id)
	s.mu.Unlock()
	if !ok {
		return false
	}
	in.mu.Lock()
	in.removed = true
	in.ids, in.holders, in.peers = nil, nil, nil
	in.listener = nil
	in.mu.Unlock()
	if s.store != nil {
		s.store.Unpin(id.String())
	}
	return true
}

// Len is how many migrations are open here.
func (s *Incomings) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// List returns every migration's status, oldest first.
func (s *Incomings) List() []IncomingStatus {
	s.mu.Lock()
	ins := make([]*Incoming, 0, len(s.m))
	for _, in := range s.m {
		ins = append(ins, in)
	}
	s.mu.Unlock()
	out := make([]IncomingStatus, 0, len(ins))
	for _, in := range ins {
		out = append(out, in.Status())
	}
	slices.SortFunc(out, func(a, b IncomingStatus) int { return a.Opened.Compare(b.Opened) })
	return out
}

// OpenFromManifest records a gather of an existing manifest (no source
// streaming placements); PlaceManifest then places every position.
// The migration ID is derived from the root, so gathering the same
// manifest twice is refused while the first is open. A sealed manifest
// must have been resolved with its secret.
func (s *Incomings) OpenFromManifest(root chunk.ID, m *Resolved, secret seal.Secret, holders []string) (*Incoming, error) {
	if len(holders) == 0 || len(holders) > wire.MaxHolders {
		return nil, fmt.Errorf("gather %s: %d holders (1..%d)", root, len(holders), wire.MaxHolders)
	}
	if m.Sealed && m.Plains == nil {
		return nil, fmt.Errorf("gather %s: the VM was evicted with --encrypt: give the manifest's secret (--secret; evict --json prints it): %w", root, manifest.ErrWrongSecret)
	}
	o := wire.Open{VM: m.Name, Secret: secret}
	copy(o.ID[:], root[:])
	for _, r := range m.Regions {
		o.Regions = append(o.Regions, wire.RegionInfo{Name: r.Name, Kind: uint8(r.Kind), Size: uint64(r.Size), ChunkSize: uint32(r.ChunkSize)})
	}
	in, err := s.Open(holders[0], o)
	if err != nil {
		return nil, err
	}
	hs := make([]wire.Holder, len(holders))
	for i, h := range holders {
		hs[i] = wire.Holder{Index: uint8(i), Peer: h}
	}
	if err := s.AddHolders(holders[0], o.ID, hs); err != nil {
		return nil, err
	}
	return in, nil
}

// PlaceManifest places every non-zero position of a migration opened with
// OpenFromManifest at all its holders, and finishes it. Set the listener
// (the gatherer) first.
func (s *Incomings) PlaceManifest(in *Incoming, m *Resolved, root chunk.ID) error {
	in.mu.Lock()
	n := len(in.peers)
	in.mu.Unlock()
	return s.placeAll(in.Source, in.ID, m, uint32(1)<<n-1, root)
}

func (s *Incomings) placeAll(source string, id wire.MigrationID, m *Resolved, mask uint32, root chunk.ID) error {
	var ps []wire.Placement
	flush := func() error {
		if len(ps) == 0 {
			return nil
		}
		err := s.AddPlacements(source, id, ps)
		ps = ps[:0]
		return err
	}
	for r, rids := range m.IDs {
		for i, cid := range rids {
			if cid.IsZero() {
				continue
			}
			p := wire.Placement{Region: uint16(r), Index: uint64(i), ID: cid, Holders: mask}
			if m.Plains != nil {
				p.Plain = m.Plains[r][i]
			}
			ps = append(ps, p)
			if len(ps) == wire.MaxPlacements {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return s.Finish(source, id, root, false)
}

// buildManifest builds in's manifest from its placements (an unplaced
// position is a zero chunk) and stores it here, pinned with the
// migration's chunks. It must hash to root: a placement lost or wrong
// gives another root, and ErrManifestNeeded.
func (s *Incomings) buildManifest(in *Incoming, root chunk.ID) error {
	if !in.Secret.IsZero() || s.store == nil {
		return ErrManifestNeeded // sealed: the key blocks are the source's to build
	}
	regions := make([]manifest.Region, len(in.Regions))
	for i, r := range in.Regions {
		regions[i] = manifest.Region{Name: r.Name, Kind: manifest.Kind(r.Kind), Size: int64(r.Size), ChunkSize: int(r.ChunkSize)}
	}
	in.mu.Lock()
	got, nodes, err := manifest.BuildTree(in.VM, regions, in.ids)
	in.mu.Unlock()
	if err != nil || got != root {
		return ErrManifestNeeded
	}
	ids := make([]chunk.ID, len(nodes))
	for i, n := range nodes {
		if err := s.store.Put(n.ID, n.Data); err != nil {
			return fmt.Errorf("store the manifest built here: %w", err)
		}
		ids[i] = n.ID
	}
	s.store.Pin(in.ID.String(), ids...)
	return nil
}
