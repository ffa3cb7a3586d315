package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/lab"
	"github.com/sgrelay/sg/internal/rawquic"
)

// BenchmarkEvictScatterVsDirect evicts fresh 192 MiB VMs (30% zero, 20%
// shared, 10% repeated) from a source to a destination that accepts only
// 200 Mbit/s, once with scatter (3 intermediates) and once --direct, and
// measures raw quic-go throughput on loopback in the same iteration.
//
//	go test ./e2e -run '^$' -bench EvictScatterVsDirect -benchtime 3x
func BenchmarkEvictScatterVsDirect(b *testing.B) {
	const destRate = 25e6 // bytes/s: 200 Mbit/s
	ctx, cancel := context.WithTimeout(b.Context(), 20*time.Minute)
	defer cancel()
	c, err := lab.Start(ctx, lab.Config{Bin: binDir, Dir: b.TempDir(), Names: []string{"src", "dst", "r1", "r2", "r3"},
		MemBudget: "2GiB", Flags: map[string][]string{"dst": {"--ingest-rate", fmt.Sprintf("%dB/s", int64(destRate))}}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Stop()
	if err := c.WaitConnected(ctx, 30*time.Second); err != nil {
		b.Fatal(err)
	}
	src, dst := c.Nodes[0], c.Nodes[1]
	srv, err := rawquic.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	go srv.Serve(ctx)

	var scatterET, directET, raw time.Duration
	var unique int64
	seed := uint64(100)
	for b.Loop() {
		b.StopTimer()
		results := map[string]*api.EvictResult{}
		for _, mode := range []string{"scatter", "direct"} {
			seed++
			spec := vmSpec(seed)
			spec.BaseSeed = seed // nothing already at the destination
			spec.MemSize, spec.DiskSize = 128<<20, 64<<20
			name := fmt.Sprintf("vm%d", seed)
			addVMBench(b, ctx, src, name, spec)
			args := []string{"evict", "vm", name, "--to", dst.PeerID}
			if mode == "direct" {
				args = append(args, "--direct")
			}
			var res api.EvictResult
			b.StartTimer()
			err := src.SgctlJSON(ctx, &res, args...)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			results[mode] = &res
		}
		scatterET += results["scatter"].ET
		directET += results["direct"].ET
		unique += results["scatter"].UniqueBytes
		d, err := rawquic.Send(ctx, srv.Addr(), 256<<20, 2)
		if err != nil {
			b.Fatal(err)
		}
		raw += d
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(scatterET.Seconds()/n, "scatter-ET-s")
	b.ReportMetric(directET.Seconds()/n, "direct-ET-s")
	b.ReportMetric(directET.Seconds()/scatterET.Seconds(), "direct/scatter")
	evictRate := float64(unique) / scatterET.Seconds()
	rawRate := n * (256 << 20) / raw.Seconds()
	b.ReportMetric(evictRate/1e6, "scatter-unique-MB/s")
	b.ReportMetric(rawRate/1e6, "rawquic-MB/s")
	b.ReportMetric(evictRate/rawRate, "scatter/rawquic")
}

func addVMBench(b *testing.B, ctx context.Context, n *lab.Node, name string, spec interface {
	WriteFiles(string, string) error
}) {
	b.Helper()
	dir := b.TempDir()
	mem, disk := dir+"/"+name+".mem", dir+"/"+name+".disk"
	if err := spec.WriteFiles(mem, disk); err != nil {
		b.Fatal(err)
	}
	if _, err := n.Sgctl(ctx, "vm", "add", name, "--mem", mem, "--disk", disk); err != nil {
		b.Fatal(err)
	}
}
