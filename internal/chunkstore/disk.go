package chunkstore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/sgrelay/sg/internal/chunk"
)

// Record layout (little-endian):
//
//	0   magic    u32  "SGR1"
//	4   length   u32  data bytes
//	8   id       [32] SHA-256 of the data
//	40  dataCRC  u32  CRC-32C of the data
//	44  hdrCRC   u32  CRC-32C of bytes 0..44
//	48  data
//
// CRC-32C (hardware-accelerated) verifies reads at memory speed; the ID
// check catches a record written for another chunk. Re-hashing with
// SHA-256 on every read would halve read throughput for no added safety
// against disk faults.
const (
	recordMagic  = 0x31524753 // "SGR1" little-endian
	recordHeader = 48
	segmentExt   = ".sgseg"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// DiskConfig configures a Disk tier.
type DiskConfig struct {
	Dir         string // directory of segment files; created if missing
	Budget      int64  // bytes of segment files the tier may use
	SegmentSize int64  // a segment is sealed once it reaches this size
}

// DefaultSegmentSize keeps segments large enough that a 64 GiB VM is a few
// hundred files, and small enough that compaction rewrites little at a time.
const DefaultSegmentSize = 256 << 20

// Disk is a tier of append-only segment files with an in-memory index.
type Disk struct {
	cfg  DiskConfig
	lock *os.File // flock held while open: one process per directory

	mu      sync.RWMutex
	idx     *index
	segs    map[uint32]*segment
	active  *segment
	live    int64 // bytes of live data
	used    int64 // bytes of all segment files
	buf     []byte
	closed  bool
	dropped int64 // bytes of torn or corrupt records dropped at open
}

type segment struct {
	num  uint32
	f    *os.File
	size int64 // bytes written
	dead int64 // bytes of records no longer indexed
}

// OpenDisk opens (or creates) a disk tier in cfg.Dir and rebuilds its index
// by scanning every segment. A torn tail is truncated away.
func OpenDisk(cfg DiskConfig) (*Disk, error) {
	if cfg.Dir == "" {
		return nil, errors.New("open disk tier: no directory")
	}
	if cfg.SegmentSize <= 0 {
		cfg.SegmentSize = DefaultSegmentSize
	}
	if cfg.SegmentSize > 1<<32-1-MaxChunkSize-recordHeader {
		return nil, fmt.Errorf("open disk tier: segment size %d exceeds 4 GiB", cfg.SegmentSize)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open disk tier: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cfg.Dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open disk tier: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("open disk tier %s: in use by another process: %w", cfg.Dir, err)
	}
	d := &Disk{cfg: cfg, lock: lock, idx: newIndex(), segs: make(map[uint32]*segment)}
	if err := d.load(); err != nil {
		d.closeFiles()
		return nil, fmt.Errorf("open disk tier %s: %w", cfg.Dir, err)
	}
	return d, nil
}

func (d *Disk) segPath(num uint32) string {
	return filepath.Join(d.cfg.Dir, fmt.Sprintf("%08d%s", num, segmentExt))
}

func (d *Disk) load() error {
	ents, err := os.ReadDir(d.cfg.Dir)
	if err != nil {
		return err
	}
	var nums []uint32
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), segmentExt)
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(name, 10, 32)
		if err != nil {
			continue
		}
		nums = append(nums, uint32(n))
	}
	slices.Sort(nums)
	for i, n := range nums {
		f, err := os.OpenFile(d.segPath(n), os.O_RDWR, 0)
		if err != nil {
			return err
		}
		s := &segment{num: n, f: f}
		d.segs[n] = s
		if err := d.scan(s, i == len(nums)-1); err != nil {
			return fmt.Errorf("scan segment %d: %w", n, err)
		}
		d.used += s.size
	}
	if len(nums) > 0 {
		d.active = d.segs[nums[len(nums)-1]]
	}
	return nil
}

// scan indexes the records of s. A record that fails its checks ends the
// scan: in the last segment the file is truncated there (a torn write);
// in a sealed one the rest is counted as dropped (bit rot) but left alone.
func (d *Disk) scan(s *segment, last bool) error {
	st, err := s.f.Stat()
	if err != nil {
		return err
	}
	r := bufio.NewReaderSize(io.NewSectionReader(s.f, 0, st.Size()), 1<<20)
	var hdr [recordHeader]byte
	data := make([]byte, MaxChunkSize)
	var off int64
	for {
		id, n, ok := readRecord(r, hdr[:], data)
		if !ok {
			break
		}
		if prev, had := d.idx.get(id); had {
			d.kill(prev)
		} else {
			d.live += int64(n)
		}
		d.idx.set(id, location{seg: s.num, off: uint32(off), n: uint32(n)})
		off += recordHeader + int64(n)
	}
	s.size = off
	if tail := st.Size() - off; tail > 0 {
		d.dropped += tail
		if last {
			if err := s.f.Truncate(off); err != nil {
				return err
			}
			if err := s.f.Sync(); err != nil {
				return err
			}
		} else {
			s.dead += tail
			s.size = st.Size()
		}
	}
	return nil
}

// readRecord reads and checks one record; ok is false at the end or at the
// first record that is torn or fails a check.
func readRecord(r io.Reader, hdr, data []byte) (chunk.ID, int, bool) {
	if _, err := io.ReadFull(r, hdr); err != nil {
		return chunk.ID{}, 0, false
	}
	id, n, dataCRC, ok := parseHeader(hdr)
	if !ok {
		return chunk.ID{}, 0, false
	}
	if _, err := io.ReadFull(r, data[:n]); err != nil {
		return chunk.ID{}, 0, false
	}
	if crc32.Checksum(data[:n], castagnoli) != dataCRC {
		return chunk.ID{}, 0, false
	}
	return id, n, true
}

func parseHeader(hdr []byte) (id chunk.ID, n int, dataCRC uint32, ok bool) {
	if binary.LittleEndian.Uint32(hdr) != recordMagic ||
		crc32.Checksum(hdr[:44], castagnoli) != binary.LittleEndian.Uint32(hdr[44:]) {
		return id, 0, 0, false
	}
	n = int(binary.LittleEndian.Uint32(hdr[4:]))
	if n == 0 || n > MaxChunkSize {
		return id, 0, 0, false
	}
	copy(id[:], hdr[8:40])
	return id, n, binary.LittleEndian.Uint32(hdr[40:]), true
}

// kill marks the record at loc as dead.
func (d *Disk) kill(loc location) {
	if s := d.segs[loc.seg]; s != nil {
		s.dead += recordHeader + int64(loc.n)
	}
	d.live -= int64(loc.n)
}

func (d *Disk) Has(id chunk.ID) bool {
	d.mu.RLock()
	_, ok := d.idx.get(id)
	d.mu.RUnlock()
	return ok
}

func (d *Disk) Get(id chunk.ID, dst []byte) ([]byte, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return dst[:0], ErrClosed
	}
	loc, ok := d.idx.get(id)
	if !ok {
		return dst[:0], ErrNotFound
	}
	total := recordHeader + int(loc.n)
	if cap(dst) < total {
		dst = make([]byte, total)
	}
	rec := dst[:total]
	if _, err := d.segs[loc.seg].f.ReadAt(rec, int64(loc.off)); err != nil {
		return dst[:0], fmt.Errorf("read chunk %s: %w", id.Short(), err)
	}
	gotID, n, dataCRC, ok := parseHeader(rec)
	if !ok || gotID != id || n != int(loc.n) || crc32.Checksum(rec[recordHeader:], castagnoli) != dataCRC {
		return dst[:0], fmt.Errorf("chunk %s at segment %d offset %d: %w", id.Short(), loc.seg, loc.off, ErrCorrupt)
	}
	copy(rec, rec[recordHeader:])
	return rec[:n], nil
}

func (d *Disk) Put(id chunk.ID, data []byte) error {
	if len(data) > MaxChunkSize {
		return ErrTooLarge
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if _, ok := d.idx.get(id); ok {
		return nil
	}
	return d.appendLocked(id, data)
}

func (d *Disk) appendLocked(id chunk.ID, data []byte) error {
	size := int64(recordHeader + len(data))
	if d.used+size > d.cfg.Budget {
		return ErrFull
	}
	if d.active == nil || d.active.size+size > d.cfg.SegmentSize {
		if err := d.rollLocked(); err != nil {
			return err
		}
	}
	rec := slices.Grow(d.buf[:0], int(size))[:size]
	binary.LittleEndian.PutUint32(rec, recordMagic)
	binary.LittleEndian.PutUint32(rec[4:], uint32(len(data)))
	copy(rec[8:40], id[:])
	binary.LittleEndian.PutUint32(rec[40:], crc32.Checksum(data, castagnoli))
	binary.LittleEndian.PutUint32(rec[44:], crc32.Checksum(rec[:44], castagnoli))
	copy(rec[recordHeader:], data)
	d.buf = rec
	s := d.active
	if _, err := s.f.WriteAt(rec, s.size); err != nil {
		// A partial write leaves a torn record past s.size: the next write
		// overwrites it, and a crash before that truncates it at open.
		return fmt.Errorf("write chunk %s to segment %d: %w", id.Short(), s.num, err)
	}
	d.idx.set(id, location{seg: s.num, off: uint32(s.size), n: uint32(len(data))})
	s.size += size
	d.used += size
	d.live += int64(len(data))
	return nil
}

// rollLocked seals the active segment (fsync) and starts the next one.
func (d *Disk) rollLocked() error {
	var num uint32
	if d.active != nil {
		if err := d.active.f.Sync(); err != nil {
			return fmt.Errorf("seal segment %d: %w", d.active.num, err)
		}
		num = d.active.num + 1
	}
	f, err := os.OpenFile(d.segPath(num), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("create segment: %w", err)
	}
	if err := syncDir(d.cfg.Dir); err != nil {
		f.Close()
		return err
	}
	s := &segment{num: num, f: f}
	d.segs[num] = s
	d.active = s
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func (d *Disk) Delete(id chunk.ID) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if loc, ok := d.idx.remove(id); ok {
		d.kill(loc)
	}
	return nil
}

func (d *Disk) Range(fn func(id chunk.ID, size int) bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	d.idx.each(func(id chunk.ID, loc location) bool { return fn(id, int(loc.n)) })
}

func (d *Disk) Sync() error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	if d.active == nil {
		return nil
	}
	return d.active.f.Sync()
}

// Compact rewrites every sealed segment whose dead bytes exceed half of it:
// its live records are appended to the active segment, made durable, and
// only then is the old file removed, so a crash at any point loses nothing.
// It returns the bytes freed.
func (d *Disk) Compact() (int64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, ErrClosed
	}
	var victims []*segment
	for _, s := range d.segs {
		if s != d.active && s.dead*2 > s.size {
			victims = append(victims, s)
		}
	}
	sort.Slice(victims, func(i, j int) bool { return victims[i].num < victims[j].num })
	var freed int64
	for _, v := range victims {
		n, err := d.compactLocked(v)
		freed += n
		if err != nil {
			return freed, fmt.Errorf("compact segment %d: %w", v.num, err)
		}
	}
	return freed, nil
}

func (d *Disk) compactLocked(v *segment) (int64, error) {
	type move struct {
		id  chunk.ID
		loc location
	}
	var moves []move
	d.idx.each(func(id chunk.ID, loc location) bool {
		if loc.seg == v.num {
			moves = append(moves, move{id, loc})
		}
		return true
	})
	// The victim's file leaves the budget now so that its live records can
	// be copied even when the tier is full; on failure it is counted again.
	d.used -= v.size
	buf := make([]byte, recordHeader+MaxChunkSize)
	for _, m := range moves {
		rec := buf[:recordHeader+int(m.loc.n)]
		_, err := v.f.ReadAt(rec, int64(m.loc.off))
		if err != nil {
			d.used += v.size
			return 0, err
		}
		d.idx.remove(m.id)
		d.live -= int64(m.loc.n)
		id, n, dataCRC, ok := parseHeader(rec)
		if !ok || id != m.id || crc32.Checksum(rec[recordHeader:recordHeader+n], castagnoli) != dataCRC {
			continue // never copy a bad record forward
		}
		if err := d.appendLocked(m.id, rec[recordHeader:recordHeader+n]); err != nil {
			d.used += v.size
			return 0, err
		}
	}
	if err := d.active.f.Sync(); err != nil {
		d.used += v.size
		return 0, err
	}
	v.f.Close()
	delete(d.segs, v.num)
	if err := os.Remove(d.segPath(v.num)); err != nil {
		return 0, err
	}
	return v.dead, syncDir(d.cfg.Dir)
}

func (d *Disk) Stats() TierStats {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return TierStats{Name: "disk", Chunks: int64(d.idx.n), Bytes: d.live, Used: d.used, Budget: d.cfg.Budget}
}

// Dropped reports the bytes of torn or corrupt records dropped at open.
func (d *Disk) Dropped() int64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.dropped
}

// IndexBytes reports the heap the in-memory index holds.
func (d *Disk) IndexBytes() int64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.idx.memoryBytes()
}

func (d *Disk) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	var err error
	if d.active != nil {
		err = d.active.f.Sync()
	}
	d.closeFiles()
	return err
}

func (d *Disk) closeFiles() {
	for _, s := range d.segs {
		s.f.Close()
	}
	d.segs = nil
	d.lock.Close()
}
