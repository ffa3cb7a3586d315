package seal

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/sgrelay/sg/internal/chunk"
)

func TestChunkRoundTripAndConvergence(t *testing.T) {
	page := make([]byte, 4096)
	rand.Read(page)
	a, b := bytes.Clone(page), bytes.Clone(page)
	sa, pa := Sum(a)
	sb, pb := Sum(b)
	if sa != sb || pa != pb || !bytes.Equal(a, b) {
		t.Fatal("the same plaintext sealed twice differs: no dedup")
	}
	if pa != chunk.Sum(page) || sa != chunk.Sum(a) {
		t.Fatal("IDs do not name the plaintext and the ciphertext")
	}
	if bytes.Contains(a, page[:64]) {
		t.Fatal("sealed chunk contains its plaintext")
	}
	Chunk(a, a, pa)
	if !bytes.Equal(a, page) {
		t.Fatal("open(seal(p)) != p")
	}
	other := bytes.Clone(page)
	other[0] ^= 1
	so, _ := Sum(other)
	if so == sa {
		t.Fatal("different plaintexts sealed to the same ID")
	}
}

func TestBlockRoundTripPerPosition(t *testing.T) {
	var s Secret
	rand.Read(s[:])
	data := bytes.Repeat([]byte("key block "), 100)
	x, y := make([]byte, len(data)), make([]byte, len(data))
	Block(x, data, s, 0, 0)
	Block(y, data, s, 0, 1)
	if bytes.Equal(x, y) {
		t.Fatal("two blocks share a keystream")
	}
	Block(x, x, s, 0, 0)
	if !bytes.Equal(x, data) {
		t.Fatal("open(seal(block)) != block")
	}
	var wrong Secret
	Block(y, y, wrong, 0, 1)
	if bytes.Equal(y, data) {
		t.Fatal("a wrong secret opened the block")
	}
}

func BenchmarkSum4K(b *testing.B) {
	page := make([]byte, 4096)
	rand.Read(page)
	b.SetBytes(int64(len(page)))
	b.ReportAllocs()
	for b.Loop() {
		Sum(page)
	}
}

func BenchmarkPlainSum4K(b *testing.B) {
	page := make([]byte, 4096)
	rand.Read(page)
	b.SetBytes(int64(len(page)))
	b.ReportAllocs()
	for b.Loop() {
		chunk.Sum(page)
	}
}
