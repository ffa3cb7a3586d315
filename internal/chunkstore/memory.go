package chunkstore

import (
	"sync"

	"github.com/sgrelay/sg/internal/chunk"
)

// Memory is a tier that keeps chunks in RAM within a byte budget.
type Memory struct {
	mu     sync.RWMutex
	chunks map[chunk.ID][]byte
	bytes  int64
	budget int64
	closed bool
}

// NewMemory returns a memory tier that holds at most budget bytes of chunk data.
func NewMemory(budget int64) *Memory {
	return &Memory{chunks: make(map[chunk.ID][]byte), budget: budget}
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
	m.chunks[id] = append([]byte(nil), data...)
	m.bytes += int64(len(data))
	return nil
}

func (m *Memory) Delete(id chunk.ID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if d, ok := m.chunks[id]; ok {
		m.bytes -= int64(len(d))
		delete(m.chunks, id)
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
	return nil
}
