package daemon

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/sgrelay/sg/internal/chunkstore"
)

// Go's profiles are not served on the metrics address unless asked for:
// /debug/pprof/ is 404 by default while /metrics answers, and 200 with
// the setting.
func TestHostilePprofOnlyBehindItsFlag(t *testing.T) {
	for _, on := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		cfg := DefaultConfig(t.TempDir())
		cfg.Node.Listen = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
		cfg.Store = chunkstore.Config{MemoryBudget: 64 << 20}
		cfg.MetricsAddr, cfg.Pprof = addr, on
		d, err := New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		get := func(path string) int {
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				resp, err := http.Get("http://" + addr + path)
				if err == nil {
					resp.Body.Close()
					return resp.StatusCode
				}
				if time.Now().After(deadline) {
					t.Fatalf("GET %s: %v", path, err)
				}
			}
		}
		if code := get("/metrics"); code != http.StatusOK {
			t.Fatalf("/metrics: %d", code)
		}
		want := http.StatusNotFound
		if on {
			want = http.StatusOK
		}
		if code := get("/debug/pprof/"); code != want {
			t.Fatalf("pprof %v: /debug/pprof/ answered %d, want %d", on, code, want)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
