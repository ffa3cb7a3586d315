package fetch

import (
	"errors"
	"fmt"
	"math"
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

	mu        sync.Mutex
	ids       []placedIDs         // per region, per position; zero value: not placed yet
	holders   map[chunk.ID]uint32 // holder mask per chunk
	peers     map[uint8]string    // holder index → peer
	placed    int64               // positions placed
	root      chunk.ID            // manifest root, once done
	finished  time.Time           // when the source handed over the root
	abandoned bool                // the source gave it up before the root
	changed   chan struct{}       // closed and replaced on every update
	listener  IncomingListener
	removed   bool // Remove dropped its state: frames for it are refused
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
	Named    int64 // distinct chunks placed, each with its holders (≤ Placed)
	Root     chunk.ID
	Done     bool
	Opened   time.Time
	Finished time.Time
}

// Status reports progress.
func (in *Incoming) Status() IncomingStatus {
	in.mu.Lock()
	defer in.mu.Unlock()
	st := IncomingStatus{ID: in.ID, Source: in.Source, VM: in.VM, Placed: in.placed, Named: int64(len(in.holders)), Root: in.root,
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
	if region < 0 || region >= len(in.ids) || index >= in.ids[region].len() {
		return chunk.ID{}, false
	}
	id := in.ids[region].at(index)
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
	admit Admission
}

// Admission bounds what migrations opened here may claim. Open checks it
// before it allocates anything for a migration, so an Open larger than
// the node can hold is refused with an error and the node stays up.
// Zero fields take the defaults below.
type Admission struct {
	// MaxPositions caps one migration's chunk positions, all regions
	// together: the gather keeps a few bytes of state per position.
	MaxPositions int64
	// PerSource caps the migrations one source may have here (not yet
	// retired nor abandoned: a handed-over migration still gathers), and
	// PerSourceBytes their total region bytes.
	PerSource      int
	PerSourceBytes int64
	// MaxOpenPositions caps the chunk positions of every migration here
	// not yet retired, whatever its source: what their gathers hold in
	// memory (StatePerPosition bytes each at most) is bounded by what the
	// node can hold, not by how many sources it has. 0: not checked.
	MaxOpenPositions int64
	// Room reports how many bytes this node can still take for gathered
	// VMs (the free disk where they are written); nil: not checked. The
	// migrations here not yet retired are counted against it too, since
	// their files fill as they gather.
	Room func() (int64, error)
}

// StatePerPosition bounds the bytes of memory an open migration's
// position costs this node, its gather's state included (measured by
// TestStatePerPositionBounded).
const StatePerPosition = 512

// Admission defaults.
const (
	DefaultMaxPositions   = 1 << 26 // 256 GiB of 4 KiB pages, ~2 GiB of gather state
	DefaultPerSource      = 16
	DefaultPerSourceBytes = 1 << 40
)

// SetAdmission installs a's bounds for the next Opens.
func (s *Incomings) SetAdmission(a Admission) {
	if a.MaxPositions <= 0 {
		a.MaxPositions = DefaultMaxPositions
	}
	if a.PerSource <= 0 {
		a.PerSource = DefaultPerSource
	}
	if a.PerSourceBytes <= 0 {
		a.PerSourceBytes = DefaultPerSourceBytes
	}
	s.mu.Lock()
	s.admit = a
	s.mu.Unlock()
}

// admitLocked refuses o from source if it breaks the admission bounds
// (only the positions cap unless it comes from a peer).
func (s *Incomings) admitLocked(source string, o wire.Open, positions, bytes uint64, fromPeer bool) error {
	a := s.admit
	if positions > uint64(a.MaxPositions) {
		return fmt.Errorf("open %s: VM %s has %d chunk positions, this node takes at most %d: %w", o.ID, o.VM, positions, a.MaxPositions, ErrTooLarge)
	}
	if !fromPeer {
		return nil
	}
	var fromSource int
	var sourceBytes, openBytes, held uint64
	for _, in := range s.m {
		in.mu.Lock()
		abandoned := in.abandoned
		in.mu.Unlock()
		if abandoned { // its state and files go at once
			continue
		}
		// Handed over or not, a migration holds its gather's state and
		// fills its files until it is retired: a source that hands over at
		// once and opens again is still held to its caps.
		held += in.positions()
		b := in.bytes()
		openBytes += b
		if in.Source == source {
			fromSource++
			sourceBytes += b
		}
	}
	if a.MaxOpenPositions > 0 && held+positions > uint64(a.MaxOpenPositions) {
		return fmt.Errorf("open %s: VM %s has %d chunk positions, with %d held by the migrations here this node takes at most %d (%d bytes of state each): %w",
			o.ID, o.VM, positions, held, a.MaxOpenPositions, StatePerPosition, ErrTooLarge)
	}
	if fromSource >= a.PerSource {
		return fmt.Errorf("open %s: %d migrations from this source are open here (cap %d): %w", o.ID, fromSource, a.PerSource, ErrTooManyOpen)
	}
	if sourceBytes+bytes > uint64(a.PerSourceBytes) {
		return fmt.Errorf("open %s: VM %s of %d bytes, with %d bytes open from this source (cap %d): %w", o.ID, o.VM, bytes, sourceBytes, a.PerSourceBytes, ErrTooLarge)
	}
	if a.Room != nil {
		room, err := a.Room()
		if err != nil {
			return fmt.Errorf("open %s: free space: %w", o.ID, err)
		}
		if room < 0 || openBytes+bytes > uint64(room) {
			return fmt.Errorf("open %s: VM %s of %d bytes, with %d bytes of open migrations, does not fit the %d bytes free here: %w", o.ID, o.VM, bytes, openBytes, room, ErrTooLarge)
		}
	}
	return nil
}

// positions is the migration's chunk positions, all regions together.
func (in *Incoming) positions() uint64 {
	var n uint64
	for _, r := range in.Regions {
		n += (r.Size + uint64(r.ChunkSize) - 1) / uint64(r.ChunkSize)
	}
	return n
}

// bytes is the migration's total region size.
func (in *Incoming) bytes() uint64 {
	var b uint64
	for _, r := range in.Regions {
		b += r.Size
	}
	return b
}

// IncomingStore is where placed chunks are pinned and a manifest built
// here is stored (the node's chunk store).
type IncomingStore interface {
	Pinner
	Put(id chunk.ID, data []byte) error
}

// NewIncomings returns an empty set that pins placed chunks in store.
func NewIncomings(store IncomingStore) *Incomings {
	s := &Incomings{store: store, m: map[wire.MigrationID]*Incoming{}}
	s.SetAdmission(Admission{})
	return s
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
	ErrPlacementChanged   = errors.New("position already placed with another chunk")
	ErrTooLarge           = errors.New("migration too large for this node")
	ErrTooManyOpen        = errors.New("too many migrations open from this source")
)

// Open records a new migration from source, if its names are valid and
// it fits the admission bounds (SetAdmission); nothing is allocated for
// a migration before both checks pass.
func (s *Incomings) Open(source string, o wire.Open) (*Incoming, error) {
	return s.open(source, o, true)
}

// open is Open; a gather the operator asked for (fromPeer false: sgctl
// gather, or resuming after a restart, whose files may already fill the
// disk) is held to the names and the positions cap only.
func (s *Incomings) open(source string, o wire.Open, fromPeer bool) (*Incoming, error) {
	if err := o.CheckNames(); err != nil {
		return nil, err
	}
	var positions, bytes uint64
	for _, r := range o.Regions {
		if r.ChunkSize == 0 || r.Size > math.MaxUint64/2 || bytes+r.Size < bytes {
			return nil, fmt.Errorf("open %s: region %s of %d bytes in %d-byte chunks: %w", o.ID, r.Name, r.Size, r.ChunkSize, ErrTooLarge)
		}
		positions += (r.Size + uint64(r.ChunkSize) - 1) / uint64(r.ChunkSize)
		bytes += r.Size
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[o.ID]; ok {
		return nil, fmt.Errorf("open %s: %w", o.ID, ErrDuplicateMigration)
	}
	if err := s.admitLocked(source, o, positions, bytes, fromPeer); err != nil {
		return nil, err
	}
	in := &Incoming{ID: o.ID, Source: source, VM: o.VM, Regions: o.Regions, Opened: time.Now(), Secret: o.Secret, PullDuringScatter: o.PullDuringScatter,
		holders: map[chunk.ID]uint32{}, peers: map[uint8]string{}, changed: make(chan struct{})}
	for _, r := range o.Regions {
		in.ids = append(in.ids, newPlacedIDs((r.Size+uint64(r.ChunkSize)-1)/uint64(r.ChunkSize)))
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
// A frame that puts a position outside the VM, or gives a placed position
// another chunk, is refused whole: a position holds one chunk, so the
// holders and pins of a migration never outgrow its positions.
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
	if err := in.checkPlacementsLocked(ps); err != nil {
		in.mu.Unlock()
		return fmt.Errorf("%s: %w", id, err)
	}
	for _, p := range ps {
		if in.ids[p.Region].at(p.Index).IsZero() {
			in.placed++
		}
		in.ids[p.Region].set(p.Index, p.ID)
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

// checkPlacementsLocked refuses ps if one of them is outside the VM or
// changes the chunk of a position, already placed or earlier in ps.
// Placing a position again with its own chunk (new holders) is fine.
func (in *Incoming) checkPlacementsLocked(ps []wire.Placement) error {
	type position struct {
		region uint16
		index  uint64
	}
	inFrame := make(map[position]chunk.ID, len(ps)) // len(ps) ≤ wire.MaxPlacements
	for _, p := range ps {
		if int(p.Region) >= len(in.ids) || p.Index >= in.ids[p.Region].len() {
			return fmt.Errorf("region %d index %d: %w", p.Region, p.Index, ErrBadPlacement)
		}
		at := position{p.Region, p.Index}
		had := in.ids[p.Region].at(p.Index)
		if had.IsZero() {
			had = inFrame[at]
		}
		inFrame[at] = p.ID
		if !had.IsZero() && had != p.ID {
			return fmt.Errorf("region %d index %d is %s, not %s: %w", p.Region, p.Index, had, p.ID, ErrPlacementChanged)
		}
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
	in.abandoned = in.abandoned || !finished
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
		return nil, fmt.Errorf("gather %s: the VM was evicted encrypted: its manifest's secret is needed: %w", root, manifest.ErrWrongSecret)
	}
	if err := m.CheckNames(); err != nil {
		return nil, fmt.Errorf("gather %s: %w", root, err)
	}
	o := wire.Open{VM: m.Name, Secret: secret}
	copy(o.ID[:], root[:])
	for _, r := range m.Regions {
		o.Regions = append(o.Regions, wire.RegionInfo{Name: r.Name, Kind: uint8(r.Kind), Size: uint64(r.Size), ChunkSize: uint32(r.ChunkSize)})
	}
	in, err := s.open(holders[0], o, false)
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
	ids := make([][]chunk.ID, len(in.ids))
	for i := range in.ids {
		ids[i] = in.ids[i].dense()
	}
	in.mu.Unlock()
	got, nodes, err := manifest.BuildTree(in.VM, regions, ids)
	if err != nil || got != root {
		return ErrManifestNeeded
	}
	nodeIDs := make([]chunk.ID, len(nodes))
	for i, n := range nodes {
		if err := s.store.Put(n.ID, n.Data); err != nil {
			return fmt.Errorf("store the manifest built here: %w", err)
		}
		nodeIDs[i] = n.ID
	}
	s.store.Pin(in.ID.String(), nodeIDs...)
	return nil
}
