package daemon

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sgrelay/sg/internal/chunkstore"
)

// FuzzControlAPI sends arbitrary bodies to the control API's endpoints on
// a real daemon (no peers): whatever the bytes, a handler answers with a
// status, never panics, and a request it cannot decode gets 400. /v1/get
// is left out: a well-formed request writes a file where it says.
func FuzzControlAPI(f *testing.F) {
	routes := []struct{ method, path string }{
		{"POST", "/v1/put"}, {"POST", "/v1/vms"}, {"DELETE", "/v1/vms/x"}, {"POST", "/v1/evict"},
		{"POST", "/v1/verify"}, {"POST", "/v1/gather"}, {"GET", "/v1/status"}, {"GET", "/v1/migrations"},
	}
	for i := range routes {
		f.Add(uint8(i), []byte(`{}`))
	}
	f.Add(uint8(0), []byte(`{"path":"/nonexistent","replicas":-1,"chunk_size":0}`))
	f.Add(uint8(1), []byte(`{"name":"","mem":["relative"]}`))
	f.Add(uint8(3), []byte(`{"vms":["a"],"to":"","replicas":1000000,"max_rate":-5}`))
	f.Add(uint8(4), []byte(`{"cid":"bafkreinotacid"}`))
	f.Add(uint8(5), []byte(`{"cid":"bafkreiajdlviefpa7emlblqexxvxn2xzlxdphfzy7ffnmidnow5swlu3qq","from":["nobody"]}`))
	f.Add(uint8(3), []byte(`{"vms":["a"],"unknown":1}`))
	f.Add(uint8(2), []byte("\x00\xff{"))

	dir := f.TempDir()
	cfg := DefaultConfig(dir)
	cfg.Node.Listen = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	cfg.Store = chunkstore.Config{MemoryBudget: 64 << 20}
	d, err := New(cfg, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.cancelRun(); _ = d.close() })
	h := d.handler()

	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		r := routes[int(route)%len(routes)]
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req := httptest.NewRequestWithContext(ctx, r.method, r.path, bytes.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code < 200 || rec.Code > 599 {
			t.Fatalf("%s %s: status %d", r.method, r.path, rec.Code)
		}
		if r.method == "POST" && !bytes.HasPrefix(bytes.TrimSpace(body), []byte("{")) && rec.Code != http.StatusBadRequest {
			t.Fatalf("%s %s with a body that is no JSON object: status %d, want 400", r.method, r.path, rec.Code)
		}
	})
}
