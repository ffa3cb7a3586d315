package fetch_test

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/workload"
)

func benchSpec(seed uint64) workload.Spec {
	return workload.Spec{Seed: seed, BaseSeed: seed, MemSize: 64 << 20, PageSize: 4096, DiskBlock: 65536}
}

// BenchmarkGatherThroughput gathers a 64 MiB VM of distinct 4 KiB pages
// from two holders answering after 1 ms, prefetch only: the gatherer's own
// cost per chunk (scheduling, verifying, writing, keeping).
//
//	go test ./fetch -run '^$' -bench GatherThroughput -benchtime 3x
func BenchmarkGatherThroughput(b *testing.B) {
	b.SetBytes(64 << 20)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		net := newGnet("src")
		net.peer("r1", time.Millisecond)
		net.peer("r2", time.Millisecond)
		local, _ := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 30})
		f := newFixture(b, net, local, benchSpec(uint64(i)+1), func(id chunk.ID) []uint8 { return []uint8{id[0] % 2} }, []string{"r1", "r2"})
		_, g := f.start(b, []string{"r1", "r2"}, fetch.DefaultGatherConfig(b.TempDir()))
		f.placeAll(b, 1, 0)
		b.StartTimer()
		if err := g.Run(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDemandLatencyUnderPrefetch reads random pages of a 64 MiB VM
// while the prefetcher keeps every holder's window full, holders answering
// after 1 ms: the latency of the reads that had to wait for the network.
//
//	go test ./fetch -run '^$' -bench DemandLatency -benchtime 3x
func BenchmarkDemandLatencyUnderPrefetch(b *testing.B) {
	var waits []time.Duration
	for i := 0; b.Loop(); i++ {
		net := newGnet("src")
		net.peer("r1", time.Millisecond)
		net.peer("r2", time.Millisecond)
		local, _ := chunkstore.Open(chunkstore.Config{MemoryBudget: 1 << 30})
		spec := benchSpec(uint64(i) + 100)
		f := newFixture(b, net, local, spec, func(id chunk.ID) []uint8 { return []uint8{id[0] % 2} }, []string{"r1", "r2"})
		_, g := f.start(b, []string{"r1", "r2"}, fetch.DefaultGatherConfig(b.TempDir()))
		f.placeAll(b, 1, 0)
		done := make(chan error, 1)
		go func() { done <- g.Run(b.Context()) }()
		r := rand.New(rand.NewPCG(uint64(i), 9))
		buf := make([]byte, 4096)
		for range 200 {
			off := int64(r.IntN(int(spec.MemSize/4096))) * 4096
			before := g.Report().NetworkFaults
			start := time.Now()
			if _, err := g.ReadAt(b.Context(), 0, buf, off); err != nil {
				b.Fatal(err)
			}
			if g.Report().NetworkFaults > before {
				waits = append(waits, time.Since(start))
			}
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	if len(waits) == 0 {
		b.Skip("every read was already local")
	}
	slices.Sort(waits)
	b.ReportMetric(float64(waits[len(waits)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(waits[len(waits)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(len(waits))/float64(b.N), "network-reads/op")
}
