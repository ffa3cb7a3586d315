package node

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/rawquic"
	"github.com/sgrelay/sg/internal/wire"
)

// BenchmarkPushVsRawQUIC pushes 64 MiB of 64 KiB chunks between two nodes on
// loopback (verified, stored, synced, acknowledged), and in the same
// iteration sends 64 MiB over plain quic-go with the same windows. It
// reports both rates and their ratio, so machine noise cancels out.
//
//	go test ./node -run ^$ -bench PushVsRawQUIC -benchtime 5x
func BenchmarkPushVsRawQUIC(b *testing.B) {
	const (
		total   = 64 << 20
		size    = 64 << 10
		batch   = 16 // chunks per push frame: 1 MiB
		streams = 2
	)
	nodes := newTestNodes(b, 2, nil)
	a, dst := nodes[0], nodes[1]
	connect(b, a, dst)
	srv, err := rawquic.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	go srv.Serve(ctx)

	chunks := randomChunks(total/size, size)
	var pushTime, rawTime time.Duration
	b.SetBytes(total)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		for _, c := range chunks {
			dst.store.Delete(c.ID)
		}
		b.StartTimer()

		start := time.Now()
		pushAll(b, a.Node, dst.ID(), chunks, batch, streams)
		pushTime += time.Since(start)

		b.StopTimer()
		d, err := rawquic.Send(ctx, srv.Addr(), total, streams)
		if err != nil {
			b.Fatal(err)
		}
		rawTime += d
		b.StartTimer()
	}
	push := float64(b.N) * total / pushTime.Seconds() / 1e6
	raw := float64(b.N) * total / rawTime.Seconds() / 1e6
	b.ReportMetric(push, "push-MB/s")
	b.ReportMetric(raw, "rawquic-MB/s")
	b.ReportMetric(push/raw, "push/raw")
}

// pushAll spreads chunks over several pipelined streams and waits for
// every acknowledgement.
func pushAll(tb testing.TB, n *Node, to peer.ID, chunks []wire.Chunk, batch, streams int) {
	tb.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	per := (len(chunks) + streams - 1) / streams
	for s := range streams {
		part := chunks[min(len(chunks), s*per):min(len(chunks), (s+1)*per)]
		wg.Go(func() {
			ps, err := n.OpenPush(ctx, to, testHold)
			if err != nil {
				tb.Error(err)
				return
			}
			for i := 0; i < len(part); i += batch {
				err := ps.Push(ctx, part[i:min(len(part), i+batch)], func(st []wire.Status, err error) {
					if err != nil {
						tb.Error(err)
						return
					}
					for _, s := range st {
						if s != wire.StatusOK {
							tb.Errorf("push status %s", s)
							return
						}
					}
				})
				if err != nil {
					tb.Error(err)
					return
				}
			}
			if err := ps.Close(); err != nil {
				tb.Error(err)
			}
		})
	}
	wg.Wait()
}
