package chunkstore

import (
	"errors"
	"fmt"
	"sync"

	"github.com/sgrelay/sg/internal/chunk"
)

// Config configures a Store.
type Config struct {
	MemoryBudget int64  // bytes of chunk data kept in RAM
	DiskDir      string // segment directory; empty means memory only
	DiskBudget   int64  // bytes of segment files
	SegmentSize  int64  // 0 means DefaultSegmentSize
}

// DefaultConfig keeps 1 GiB in memory and no disk tier.
func DefaultConfig() Config {
	return Config{MemoryBudget: 1 << 30}
}

// Validate reports the first thing wrong with c.
func (c Config) Validate() error {
	switch {
	case c.MemoryBudget < 0:
		return errors.New("chunkstore: memory budget is negative")
	case c.DiskBudget < 0:
		return errors.New("chunkstore: disk budget is negative")
	case c.DiskDir == "" && c.DiskBudget > 0:
		return errors.New("chunkstore: disk budget set but no disk directory")
	case c.MemoryBudget == 0 && c.DiskBudget == 0:
		return errors.New("chunkstore: both budgets are zero: the store could hold nothing")
	}
	return nil
}

// Store puts chunks in memory until its budget is reached, then on disk,
// and keeps pins so that GC frees only what no migration still needs.
type Store struct {
	mem  *Memory
	disk *Disk // nil for a memory-only store

	mu   sync.Mutex
	pins map[chunk.ID]int32    // how many owners pin each chunk
	own  map[string][]chunk.ID // what each owner pinned
	// held is what each holder (a peer's migration or put) keeps, each
	// chunk once: it counts once in pins, and Free deletes what no one
	// else keeps.
	held map[string]map[chunk.ID]struct{}
	// brought are the held chunks that were absent when a hold first took
	// them: that hold's push stored them. Free deletes only these, so a
	// hold on a chunk that was already here (which anyone can take by
	// pushing its bytes) cannot delete it. An entry lives while the chunk
	// is pinned.
	brought map[chunk.ID]struct{}
}

// Open builds a Store from cfg, opening (and scanning) the disk tier.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Store{
		mem:  NewMemory(cfg.MemoryBudget),
		pins: make(map[chunk.ID]int32),
		own:  make(map[string][]chunk.ID),
		held: make(map[string]map[chunk.ID]struct{}),

		brought: make(map[chunk.ID]struct{}),
	}
	if cfg.DiskDir != "" && cfg.DiskBudget > 0 {
		d, err := OpenDisk(DiskConfig{Dir: cfg.DiskDir, Budget: cfg.DiskBudget, SegmentSize: cfg.SegmentSize})
		if err != nil {
			return nil, err
		}
		s.disk = d
	}
	return s, nil
}

// Disk returns the disk tier, or nil.
func (s *Store) Disk() *Disk { return s.disk }

func (s *Store) Has(id chunk.ID) bool {
	return s.mem.Has(id) || (s.disk != nil && s.disk.Has(id))
}

func (s *Store) Get(id chunk.ID, dst []byte) ([]byte, error) {
	out, err := s.mem.Get(id, dst)
	if errors.Is(err, ErrNotFound) && s.disk != nil {
		return s.disk.Get(id, dst)
	}
	return out, err
}

func (s *Store) Put(id chunk.ID, data []byte) error {
	if s.disk != nil && s.disk.Has(id) {
		return nil
	}
	err := s.mem.Put(id, data)
	if errors.Is(err, ErrFull) && s.disk != nil {
		return s.disk.Put(id, data)
	}
	return err
}

func (s *Store) Delete(id chunk.ID) error {
	if err := s.mem.Delete(id); err != nil {
		return err
	}
	if s.disk != nil {
		return s.disk.Delete(id)
	}
	return nil
}

func (s *Store) Range(fn func(id chunk.ID, size int) bool) {
	more := true
	s.mem.Range(func(id chunk.ID, size int) bool { more = fn(id, size); return more })
	if more && s.disk != nil {
		s.disk.Range(fn)
	}
}

func (s *Store) Sync() error {
	if s.disk != nil {
		return s.disk.Sync()
	}
	return nil
}

// Stats sums the tiers.
func (s *Store) Stats() TierStats {
	st := s.mem.Stats()
	st.Name = "store"
	if s.disk != nil {
		d := s.disk.Stats()
		st.Chunks += d.Chunks
		st.Bytes += d.Bytes
		st.Used += d.Used
		st.Budget += d.Budget
	}
	return st
}

// TierStats reports each tier separately.
func (s *Store) TierStats() []TierStats {
	out := []TierStats{s.mem.Stats()}
	if s.disk != nil {
		out = append(out, s.disk.Stats())
	}
	return out
}

func (s *Store) Close() error {
	err := s.mem.Close()
	if s.disk != nil {
		err = errors.Join(err, s.disk.Close())
	}
	return err
}

// Pin records that owner needs ids. Pinning a chunk that is not (yet) held
// is allowed: it protects the chunk from GC once it arrives.
func (s *Store) Pin(owner string, ids ...chunk.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		s.pins[id]++
	}
	s.own[owner] = append(s.own[owner], ids...)
}

// Unpin drops every pin owner holds and returns how many it dropped.
func (s *Store) Unpin(owner string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := s.own[owner]
	for _, id := range ids {
		if s.pins[id]--; s.pins[id] <= 0 {
			delete(s.pins, id)
			delete(s.brought, id)
		}
	}
	delete(s.own, owner)
	return len(ids)
}

// Pinned reports whether any owner pins id.
func (s *Store) Pinned(id chunk.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pins[id] > 0
}

// Hold records that holder keeps ids, each once however often it is
// held, and returns how many of ids were new to holder. Hold a chunk
// before storing it: a Free running meanwhile then cannot delete it
// between the store and the hold. A chunk absent when first held is
// marked as brought by a hold, and only such a chunk is deleted by Free.
func (s *Store) Hold(holder string, ids ...chunk.ID) (added int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.held[holder]
	if set == nil {
		set = make(map[chunk.ID]struct{}, len(ids))
		s.held[holder] = set
	}
	for _, id := range ids {
		if _, ok := set[id]; ok {
			continue
		}
		set[id] = struct{}{}
		added++
		if s.pins[id] == 0 && !s.Has(id) {
			s.brought[id] = struct{}{}
		}
		s.pins[id]++
	}
	return added
}

// DeleteUnpinned deletes id if it is stored and nothing pins or holds it,
// checked and deleted under the store's lock: a hold taken concurrently
// (a push about to be acknowledged) either comes first and keeps the
// chunk, or comes after and stores it again. It returns the bytes deleted
// (0: kept or absent).
func (s *Store) DeleteUnpinned(id chunk.ID) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pins[id] > 0 || !s.Has(id) {
		return 0, nil
	}
	data, err := s.Get(id, nil)
	if err != nil {
		return 0, err
	}
	if err := s.Delete(id); err != nil {
		return 0, err
	}
	return len(data), nil
}

// Held reports how many chunks holder keeps.
func (s *Store) Held(holder string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held[holder])
}

// Free ends holder's hold and deletes each of its chunks that no other
// holder or pin keeps and that a hold brought into the store; it returns
// the deleted IDs. A chunk that was here before any hold took it is only
// unpinned, and left to GC. With del false it only ends the hold (what it
// kept is left to GC).
func (s *Store) Free(holder string, del bool) ([]chunk.ID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var freed []chunk.ID
	var err error
	for id := range s.held[holder] {
		if s.pins[id]--; s.pins[id] > 0 {
			continue
		}
		delete(s.pins, id)
		_, brought := s.brought[id]
		delete(s.brought, id)
		if !del || !brought || !s.Has(id) {
			continue
		}
		if e := s.Delete(id); e != nil {
			err = errors.Join(err, e)
			continue
		}
		freed = append(freed, id)
	}
	delete(s.held, holder)
	return freed, err
}

// GCResult says what a GC pass freed.
type GCResult struct {
	Chunks    int64 `json:"chunks"`
	Bytes     int64 `json:"bytes"`
	Compacted int64 `json:"compacted_bytes"`
}

// GC deletes every chunk no owner pins, then compacts the disk tier.
func (s *Store) GC() (GCResult, error) {
	var victims []chunk.ID
	var res GCResult
	s.mu.Lock()
	s.Range(func(id chunk.ID, size int) bool {
		if s.pins[id] == 0 {
			victims = append(victims, id)
			res.Bytes += int64(size)
		}
		return true
	})
	s.mu.Unlock()
	for _, id := range victims {
		if s.Pinned(id) { // pinned while we collected
			continue
		}
		if err := s.Delete(id); err != nil {
			return res, fmt.Errorf("gc: %w", err)
		}
		res.Chunks++
	}
	if s.disk != nil {
		n, err := s.disk.Compact()
		res.Compacted = n
		if err != nil {
			return res, fmt.Errorf("gc: %w", err)
		}
	}
	return res, nil
}

var (
	_ Tier = (*Memory)(nil)
	_ Tier = (*Disk)(nil)
	_ Tier = (*Store)(nil)
)
