package erasure

import (
	"bytes"
	"crypto/rand"
	"testing"
)

// Parity from the source, then any two shards lost and decoded at the
// destination: the data come back, the short last chunk included.
func TestParityThenDecode(t *testing.T) {
	var c Code
	data := make([][]byte, 4)
	for i := range data {
		data[i] = make([]byte, 4096)
		rand.Read(data[i])
	}
	data[3] = data[3][:1000] // a region's last chunk
	var pad [][]byte
	parity, err := c.Parity(data, 2, &pad)
	if err != nil {
		t.Fatal(err)
	}
	if len(parity) != 2 || len(parity[0]) != 4096 {
		t.Fatalf("%d parity shards of %d bytes", len(parity), len(parity[0]))
	}
	for _, lost := range [][2]int{{0, 1}, {3, 4}, {2, 5}} {
		shards := [][]byte{data[0], data[1], data[2], data[3], bytes.Clone(parity[0]), bytes.Clone(parity[1])}
		for i := range shards {
			shards[i] = bytes.Clone(shards[i])
		}
		shards[lost[0]], shards[lost[1]] = nil, nil
		if err := c.Decode(shards, 4, 4096); err != nil {
			t.Fatal(err)
		}
		for i := range 4 {
			if !bytes.Equal(shards[i][:len(data[i])], data[i]) {
				t.Fatalf("lost %v: data shard %d decoded wrong", lost, i)
			}
		}
	}
	shards := [][]byte{nil, nil, nil, data[3], parity[0], parity[1]}
	if err := c.Decode(shards, 4, 4096); err == nil {
		t.Fatal("decoded 4 data shards from 3")
	}
	if err := c.Decode([][]byte{make([]byte, 5000), nil, data[1]}, 2, 4096); err == nil {
		t.Fatal("a shard longer than the stripe's was accepted")
	}
}
