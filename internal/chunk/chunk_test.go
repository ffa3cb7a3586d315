package chunk

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

func TestIDMatchesGoCID(t *testing.T) {
	data := []byte("hello, scatter-gather")
	want, err := cid.V1Builder{Codec: cid.Raw, MhType: multihash.SHA2_256}.Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	id := Sum(data)
	if !id.CID().Equals(want) {
		t.Fatalf("CID %s, want %s", id.CID(), want)
	}
	back, err := Parse(want.String())
	if err != nil {
		t.Fatal(err)
	}
	if back != id {
		t.Fatalf("round trip: %x != %x", back, id)
	}
}

func TestParseRejectsOtherCIDs(t *testing.T) {
	data := []byte("x")
	cases := map[string]cid.Prefix{
		"dag-pb codec": {Version: 1, Codec: cid.DagProtobuf, MhType: multihash.SHA2_256, MhLength: -1},
		"sha2-512":     {Version: 1, Codec: cid.Raw, MhType: multihash.SHA2_512, MhLength: -1},
		"cidv0":        {Version: 0, Codec: cid.DagProtobuf, MhType: multihash.SHA2_256, MhLength: -1},
	}
	for name, p := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := p.Sum(data)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Parse(c.String()); err == nil {
				t.Fatalf("Parse(%s) accepted a non-sg CID", c)
			}
		})
	}
	if _, err := Parse("not-a-cid"); err == nil {
		t.Fatal("Parse accepted garbage")
	}
}

func TestIsZeroData(t *testing.T) {
	for _, n := range []int{0, 1, 7, 63, 64, 65, 4096, 65536} {
		buf := make([]byte, n)
		if !IsZeroData(buf) {
			t.Fatalf("len %d: zeros not detected", n)
		}
		for i := 0; i < n; i += max(1, n/17) {
			buf[i] = 1
			if IsZeroData(buf) {
				t.Fatalf("len %d: non-zero byte at %d missed", n, i)
			}
			buf[i] = 0
		}
	}
}

func TestVerify(t *testing.T) {
	data := make([]byte, 4096)
	rand.Read(data)
	id := Sum(data)
	if !Verify(id, data) {
		t.Fatal("Verify rejected correct data")
	}
	data[100] ^= 1
	if Verify(id, data) {
		t.Fatal("Verify accepted corrupted data")
	}
	if !bytes.Equal(Zero[:], make([]byte, Size)) || !Zero.IsZero() || id.IsZero() {
		t.Fatal("zero marker wrong")
	}
}

func BenchmarkSum4K(b *testing.B)  { benchSum(b, 4096) }
func BenchmarkSum64K(b *testing.B) { benchSum(b, 65536) }

func benchSum(b *testing.B, n int) {
	data := make([]byte, n)
	rand.Read(data)
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for b.Loop() {
		Sum(data)
	}
}

func BenchmarkIsZeroData4K(b *testing.B) {
	data := make([]byte, 4096)
	b.SetBytes(4096)
	for b.Loop() {
		IsZeroData(data)
	}
}
