package chunkstore

import (
	"sync"

	"github.com/sgrelay/sg/internal/chunk"
)

// Memory is a tier that keeps chunks in RAM within a byte budget.
//
// Deleted chunks' buffers are kept on free lists by size class and reused
// by later Puts, so a tier that stores and frees chunks at a steady rate
// writes into memory it already touched instead of growing the heap (each
// fresh page costs a minor fault on first write). The free lists hold at
// most maxFree bytes; beyond that freed buffers go to the garbage collector.
type Memory struct {
	mu      sync.RWMutex
	chunks  map[chunk.ID][]byte
	bytes   int64
	budget  int64
	closed  bool
	free    map[int][][]byte // size class → reusable buffers of that capacity
	freed   int64            // bytes held on the free lists
	maxFree int64
}

// memoryClass is the granularity of the memory tier's buffer sizes: a chunk
// takes a buffer rounded up to it, so buffers of nearby sizes are reusable.
const memoryClass = 4 << 10

// memoryMaxFree bounds the bytes a memory tier keeps for reuse.
const memoryMaxFree = 64 << 20

// NewMemory returns a memory tier that holds at most budget bytes of chunk data.
func NewMemory(budget int64) *Memory {
	return &Memory{
		chunks:  make(map[chunk.ID][]byte),
		budget:  budget,
		free:    make(map[int][][]byte),
		maxFree: min(budget, memoryMaxFree),
	}
}

// alloc returns a buffer of length n, reused from the free lists when one of
// n's size class is there. Called with m.mu held.
func (m *Memory) alloc(n int) []byte {
	class := (n + memoryClass - 1) / memoryClass * memoryClass
	if l := m.free[class]; len(l) > 0 {
		b := l[len(l)-1]
		l[len(l)-1] = nil
		m.free[class] = l[:len(l)-1]
		m.freed -= int64(cap(b))
		return b[:n]
	}
	return make([]byte, n, class)
}

// release puts a deleted chunk's buffer on its free list while the lists
// are under maxFree. Called with m.mu held; no reader can still hold b,
// since Get copies out under the read lock.
func (m *Memory) release(b []byte) {
	c := cap(b)
	if c%memoryClass != 0 || m.freed+int64(c) > m.maxFree {
		return
	}
	m.free[c] = append(m.free[c], b[:0])
	m.freed += int64(c)
}

func (m *Memory) Has(id chunk.ID) bool {
	m.mu.RLock()
	_, ok := m.chunks[id]
	m.mu.RUnlock()
	return ok
}

func (m *Memory) Get(id chunk.ID, dst []byte) ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return dst[:0], ErrClosed
	}
	d, ok := m.chunks[id]
	if !ok {
		return dst[:0], ErrNotFound
	}
	return append(dst[:0], d...), nil
}

func (m *Memory) Put(id chunk.ID, data []byte) error {
	if len(data) > MaxChunkSize {
		return ErrTooLarge
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if _, ok := m.chunks[id]; ok {
		return nil
	}
	if m.bytes+int64(len(data)) > m.budget {
		return ErrFull
	}
	b := m.alloc(len(data))
	copy(b, data)
	m.chunks[id] = b
	m.bytes += int64(len(data))
	return nil
}

func (m *Memory) Delete(id chunk.ID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if d, ok := m.chunks[id]; ok {
		m.bytes -= int64(len(d))
		delete(m.chunks, id)
		m.release(d)
	}
	return nil
}

func (m *Memory) Range(fn func(id chunk.ID, size int) bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for id, d := range m.chunks {
		if !fn(id, len(d)) {
			return
		}
	}
}

// Sync is a no-op: memory is as durable as the process.
func (m *Memory) Sync() error { return nil }

func (m *Memory) Stats() TierStats {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return TierStats{Name: "memory", Chunks: int64(len(m.chunks)), Bytes: m.bytes, Used: m.bytes, Budget: m.budget}
}

func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.chunks = nil
	m.bytes = 0
	m.free = nil
	m.freed = 0
	return nil
}
