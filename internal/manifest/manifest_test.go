package manifest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"slices"
	"testing"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/names"
	"github.com/sgrelay/sg/internal/seal"
)

func ids(n int) []chunk.ID {
	out := make([]chunk.ID, n)
	for i := range out {
		if i%5 == 0 {
			continue // zero chunk
		}
		out[i] = chunk.Sum([]byte{byte(i), byte(i >> 8), byte(i >> 16)})
	}
	return out
}

func TestBuildDecodeRoundTrip(t *testing.T) {
	mem := Region{Name: "mem", Kind: KindMemory, Size: 40000*4096 - 100, ChunkSize: 4096}
	disk := Region{Name: "disk0", Kind: KindDisk, Size: 3 * 65536, ChunkSize: 65536}
	memIDs, diskIDs := ids(40000), ids(3)
	memNodes, err := Build(&mem, memIDs)
	if err != nil {
		t.Fatal(err)
	}
	if len(memNodes) != 3 || len(mem.Blocks) != 3 {
		t.Fatalf("40000 chunks in %d blocks, want 3", len(memNodes))
	}
	if _, err := Build(&disk, diskIDs); err != nil {
		t.Fatal(err)
	}
	m := &Manifest{Name: "web1", Regions: []Region{mem, disk}}
	got, err := Decode(m.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "web1" || len(got.Regions) != 2 || got.Regions[0].Size != mem.Size || got.Regions[1].Kind != KindDisk {
		t.Fatalf("decoded %+v", got)
	}
	var back []chunk.ID
	for i, n := range memNodes {
		if chunk.Sum(n.Data) != got.Regions[0].Blocks[i] {
			t.Fatal("block ID mismatch")
		}
		if back, err = DecodeBlock(n.Data, back); err != nil {
			t.Fatal(err)
		}
	}
	if len(back) != len(memIDs) || back[5] != chunk.Zero || back[39999] != memIDs[39999] {
		t.Fatal("block round trip lost IDs")
	}
}

func TestSealedRoundTrip(t *testing.T) {
	var secret seal.Secret
	rand.Read(secret[:])
	r := Region{Name: "mem", Kind: KindMemory, Size: 20000 * 4096, ChunkSize: 4096}
	sealed, plains := ids(20000), ids(20000)
	slices.Reverse(plains) // any other list of the same shape
	for i := range plains {
		if sealed[i].IsZero() != plains[i].IsZero() {
			plains[i] = sealed[i]
		}
	}
	nodes, err := BuildSealed(&r, 1, sealed, plains, secret)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Blocks) != 2 || len(r.KeyBlocks) != 2 || len(nodes) != 4 {
		t.Fatalf("%d blocks, %d key blocks, %d nodes", len(r.Blocks), len(r.KeyBlocks), len(nodes))
	}
	m := &Manifest{Name: "web1", Sealed: true, Regions: []Region{{Name: "state", Kind: KindState, Size: 1, ChunkSize: 4096, Blocks: []chunk.ID{{1}}, KeyBlocks: []chunk.ID{{2}}}, r}}
	got, err := Decode(m.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if !got.Sealed || !slices.Equal(got.Regions[1].KeyBlocks, r.KeyBlocks) || !slices.Equal(got.Regions[1].Blocks, r.Blocks) {
		t.Fatalf("decoded %+v", got)
	}
	var back []chunk.ID
	for n, id := range r.KeyBlocks {
		data := nodes[2+n].Data
		if chunk.Sum(data) != id {
			t.Fatal("key block ID mismatch")
		}
		if bytes.Contains(data, plains[1][:]) {
			t.Fatal("a key block shows a plain ID")
		}
		if back, err = OpenKeyBlock(data, secret, 1, n, back); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(back, plains) {
		t.Fatal("key blocks lost plain IDs")
	}
	var wrong seal.Secret
	wrong[0] = 1
	for name, s := range map[string]seal.Secret{"wrong secret": wrong, "no secret": {}} {
		if _, err := OpenKeyBlock(nodes[2].Data, s, 1, 0, nil); !errors.Is(err, ErrWrongSecret) {
			t.Errorf("%s: %v, want ErrWrongSecret", name, err)
		}
	}
	if _, err := OpenKeyBlock(nodes[2].Data, secret, 1, 1, nil); !errors.Is(err, ErrWrongSecret) {
		t.Errorf("key block opened at another position: %v", err)
	}
	// A sealed root cut short of its key blocks is malformed.
	enc := m.Encode()
	if _, err := Decode(enc[:len(enc)-chunk.Size]); !errors.Is(err, ErrMalformed) {
		t.Errorf("truncated sealed root: %v", err)
	}
}

func TestStripesRoundTrip(t *testing.T) {
	var all []chunk.ID
	for _, id := range ids(40000) {
		if !id.IsZero() {
			all = append(all, id)
		}
	}
	var stripes []Stripe
	for i := 0; i+5 <= len(all); i += 5 {
		stripes = append(stripes, Stripe{Size: 4096, Data: all[i : i+4], Parity: all[i+4 : i+5]})
	}
	nodes := BuildStripes(stripes)
	if len(nodes) < 2 {
		t.Fatalf("%d stripes in %d blocks: want several blocks", len(stripes), len(nodes))
	}
	m := &Manifest{Name: "web1", Regions: []Region{{Name: "f", Size: 10, ChunkSize: 4, Blocks: []chunk.ID{{1}}}}}
	for _, n := range nodes {
		if len(n.Data) > MaxChunkSize || chunk.Sum(n.Data) != n.ID {
			t.Fatalf("stripe block of %d bytes, ID ok %v", len(n.Data), chunk.Sum(n.Data) == n.ID)
		}
		m.StripeBlocks = append(m.StripeBlocks, n.ID)
	}
	got, err := Decode(m.Encode())
	if err != nil || !slices.Equal(got.StripeBlocks, m.StripeBlocks) {
		t.Fatalf("decoded %v, %v", got, err)
	}
	var back []Stripe
	for _, n := range nodes {
		if back, err = DecodeStripeBlock(n.Data, back); err != nil {
			t.Fatal(err)
		}
	}
	if len(back) != len(stripes) || back[7].Size != 4096 || !slices.Equal(back[7].Data, stripes[7].Data) || !slices.Equal(back[7].Parity, stripes[7].Parity) {
		t.Fatal("stripe blocks lost stripes")
	}
	bad := slices.Clone(nodes[0].Data)
	bad[8+4] = 1 // a stripe of one data shard is a replica, never a stripe
	if _, err := DecodeStripeBlock(bad, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("1+1 stripe: %v", err)
	}
}

func TestManifestSizeUnderOnePercent(t *testing.T) {
	r := Region{Name: "mem", Kind: KindMemory, Size: 1 << 30, ChunkSize: 4096}
	nodes, err := Build(&r, make([]chunk.ID, r.Chunks()))
	if err != nil {
		t.Fatal(err)
	}
	total := len((&Manifest{Regions: []Region{r}}).Encode())
	for _, n := range nodes {
		total += len(n.Data)
	}
	if ratio := float64(total) / float64(r.Size); ratio > 0.01 {
		t.Fatalf("manifest is %.2f%% of a 1 GiB 4 KiB-page region", ratio*100)
	}
}

func TestDecodeRejects(t *testing.T) {
	good := (&Manifest{Name: "x", Regions: []Region{{Name: "f", Size: 10, ChunkSize: 4, Blocks: []chunk.ID{{1}}}}}).Encode()
	cases := map[string][]byte{
		"empty":          nil,
		"magic":          append([]byte("XXXX"), good[4:]...),
		"trailing":       append(append([]byte{}, good...), 0),
		"truncated":      good[:len(good)-1],
		"blocks≠chunks":  (&Manifest{Regions: []Region{{Name: "f", Size: 10, ChunkSize: 4}}}).Encode(),
		"zero chunksize": (&Manifest{Regions: []Region{{Name: "f", Size: 0, ChunkSize: 0}}}).Encode(),
	}
	for name, p := range cases {
		if _, err := Decode(p); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	if _, err := DecodeBlock([]byte("SGB1\x00\x00\x00\x02"), nil); !errors.Is(err, ErrMalformed) {
		t.Error("short block accepted")
	}
}

func FuzzDecode(f *testing.F) {
	r := Region{Name: "mem", Kind: KindMemory, Size: 5 * 4096, ChunkSize: 4096}
	nodes, _ := Build(&r, ids(5))
	f.Add((&Manifest{Name: "vm", Regions: []Region{r}}).Encode())
	f.Add(nodes[0].Data)
	sr := Region{Name: "mem", Kind: KindMemory, Size: 5 * 4096, ChunkSize: 4096}
	snodes, _ := BuildSealed(&sr, 0, ids(5), ids(5), seal.Secret{1})
	f.Add((&Manifest{Name: "vm", Sealed: true, Regions: []Region{sr}}).Encode())
	f.Add(snodes[1].Data)
	stripes := BuildStripes([]Stripe{{Size: 4096, Data: ids(5)[1:4], Parity: ids(5)[4:]}})
	f.Add(stripes[0].Data)
	f.Add((&Manifest{Name: "vm", Regions: []Region{r}, StripeBlocks: []chunk.ID{stripes[0].ID}}).Encode())
	f.Fuzz(func(t *testing.T, p []byte) {
		if m, err := Decode(p); err == nil {
			if !bytes.Equal(m.Encode(), p) {
				t.Fatal("root re-encodes differently")
			}
		}
		if got, err := DecodeBlock(p, nil); err == nil {
			if !bytes.Equal(EncodeBlock(got), p) {
				t.Fatal("block re-encodes differently")
			}
		}
		if got, err := DecodeStripeBlock(p, nil); err == nil {
			if q := BuildStripes(got); len(q) != 1 || !bytes.Equal(q[0].Data, p) {
				t.Fatal("stripe block re-encodes differently")
			}
		}
		if got, err := OpenKeyBlock(p, seal.Secret{1}, 0, 0, nil); err == nil {
			q := EncodeBlock(got)
			seal.Block(q, q, seal.Secret{1}, 0, 0)
			if !bytes.Equal(q, p) {
				t.Fatal("key block re-seals differently")
			}
		}
	})
}

// A VM manifest whose names could be read as paths is refused by
// CheckNames (a gather checks it before it creates anything); Decode
// still takes it, as it takes a file's manifest, named after the file.
func TestCheckNamesRefusesBadNames(t *testing.T) {
	region := func(name string) Region {
		r := Region{Name: name, Kind: KindMemory, Size: 4096, ChunkSize: 4096}
		if _, err := Build(&r, []chunk.ID{chunk.Zero}); err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, m := range []Manifest{
		{Name: "../../../escaped", Regions: []Region{region("mem")}},
		{Name: "web1", Regions: []Region{region("/../../victim")}},
		{Name: "web1", Regions: []Region{region("mem"), region("mem")}},
		{Name: "web1", Regions: []Region{region("..")}},
	} {
		got, err := Decode(m.Encode())
		if err != nil {
			t.Fatalf("Decode of a well-formed manifest: %v", err)
		}
		if err := got.CheckNames(); !errors.Is(err, names.ErrBadVM) && !errors.Is(err, names.ErrBadRegion) {
			t.Errorf("VM manifest %q with regions %q: %v, want a bad name", m.Name, m.Regions[0].Name, err)
		}
	}
	ok := Manifest{Name: "web1", Regions: []Region{region("mem"), region("disk0"), region("state"), region("qemu")}}
	if got, err := Decode(ok.Encode()); err != nil || got.CheckNames() != nil || len(got.Regions) != 4 {
		t.Fatalf("honest VM manifest: %v", err)
	}
}
