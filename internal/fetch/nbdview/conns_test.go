package nbdview

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// The export counts its connected clients, so its owner knows when the
// disk is no longer in use: up while a client is connected, back to zero
// once it hangs up.
func TestConnsCountsConnectedClients(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "disk.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Name: "disk0", Size: 4096, Disk: &memDisk{b: make([]byte, 4096)}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitConns := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for s.Conns() != want {
			if time.Now().After(deadline) {
				t.Fatalf("Conns = %d, want %d", s.Conns(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitConns(0)
	c1, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	waitConns(2)
	c1.Close()
	waitConns(1)
	c2.Close()
	waitConns(0)
}
