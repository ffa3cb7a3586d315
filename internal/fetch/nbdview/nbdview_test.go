package nbdview

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sgrelay/sg/internal/testenv"
)

type memDisk struct {
	mu sync.Mutex
	b  []byte
}

func (m *memDisk) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(p, m.b[off:]), nil
}

func (m *memDisk) WriteAt(_ context.Context, p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(m.b[off:], p), nil
}

func serve(t *testing.T, data []byte) (string, *memDisk) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "disk.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	d := &memDisk{b: data}
	s := &Server{Name: "disk0", Size: int64(len(data)), Disk: d}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return sock, d
}

// Real NBD clients read the export byte for byte: qemu-img (QEMU's own NBD
// client, as a guest would use) and nbdcopy (libnbd).
func TestClientsCopyExport(t *testing.T) {
	data := make([]byte, 8<<20+4096)
	rand.Read(data)
	clear(data[1<<20 : 3<<20])
	sock, _ := serve(t, data)
	for _, c := range []struct {
		tool string
		args func(out string) []string
	}{
		{"qemu-img", func(out string) []string {
			return []string{"convert", "-f", "raw", "-O", "raw", "nbd+unix:///disk0?socket=" + sock, out}
		}},
		{"nbdcopy", func(out string) []string { return []string{"nbd+unix:///disk0?socket=" + sock, out} }},
	} {
		t.Run(c.tool, func(t *testing.T) {
			testenv.Tool(t, "apt-get install qemu-utils libnbd-bin", c.tool)
			out := filepath.Join(t.TempDir(), "out.raw")
			if b, err := exec.Command(c.tool, c.args(out)...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v: %s", c.tool, err, b)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("%s copied %d bytes that differ from the export", c.tool, len(got))
			}
		})
	}
}

func TestWritesGoToTheDisk(t *testing.T) {
	if _, err := exec.LookPath("nbdcopy"); err != nil {
		testenv.Missing(t, "nbdcopy not on PATH (apt-get install libnbd-bin)")
	}
	data := make([]byte, 1<<20)
	sock, d := serve(t, data)
	src := filepath.Join(t.TempDir(), "src.raw")
	want := make([]byte, 1<<20)
	rand.Read(want)
	if err := os.WriteFile(src, want, 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("nbdcopy", src, "nbd+unix:///disk0?socket="+sock).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy: %v: %s", err, b)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !bytes.Equal(d.b, want) {
		t.Fatal("writes did not reach the disk")
	}
}
