package chunkstore

import (
	"fmt"
	"testing"

	"github.com/sgrelay/sg/internal/chunk"
)

// BenchmarkTier measures Put and Get of 4 KiB and 64 KiB chunks on every tier.
// Compare tiers with: go test ./chunkstore -run ^$ -bench Tier -count 6 | benchstat -
func BenchmarkTier(b *testing.B) {
	tiers := map[string]newTierFunc{
		"memory": func(t testing.TB, budget int64) Tier { return NewMemory(budget) },
		"disk": func(t testing.TB, budget int64) Tier {
			d, err := OpenDisk(DiskConfig{Dir: t.TempDir(), Budget: budget})
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
	}
	for _, name := range []string{"memory", "disk"} {
		for _, size := range []int{4 << 10, 64 << 10} {
			// A fixed working set of 64 MiB: chunks are made once, then put
			// (and deleted to keep the tier's size steady) or got.
			n := (64 << 20) / size
			ids := make([]chunk.ID, n)
			data := make([][]byte, n)
			for i := range n {
				ids[i], data[i] = testChunk(i, size)
			}
			b.Run(fmt.Sprintf("%s/Put/%dK", name, size>>10), func(b *testing.B) {
				tr := tiers[name](b, 1<<40)
				defer tr.Close()
				b.SetBytes(int64(size))
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if err := tr.Put(ids[i%n], data[i%n]); err != nil {
						b.Fatal(err)
					}
					if i++; i%n == 0 {
						b.StopTimer()
						for _, id := range ids {
							tr.Delete(id)
						}
						b.StartTimer()
					}
				}
			})
			b.Run(fmt.Sprintf("%s/Get/%dK", name, size>>10), func(b *testing.B) {
				tr := tiers[name](b, 1<<40)
				defer tr.Close()
				for i := range n {
					if err := tr.Put(ids[i], data[i]); err != nil {
						b.Fatal(err)
					}
				}
				buf := make([]byte, 0, size+recordHeader)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					var err error
					if buf, err = tr.Get(ids[i%n], buf); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}
