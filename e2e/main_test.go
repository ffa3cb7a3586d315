package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sgrelay/sg/internal/lab"
)

// binDir holds the sgnode and sgctl binaries built for this run.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sg-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	build := exec.Command("go", "build", "-o", dir+"/", "github.com/sgrelay/sg/cmd/sgnode", "github.com/sgrelay/sg/cmd/sgctl")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startCluster starts named nodes and waits until they are all connected.
func startCluster(t *testing.T, names ...string) *lab.Cluster {
	t.Helper()
	return startClusterWith(t, nil, names...)
}

// startClusterWith starts named nodes with extra sgnode flags per name
// (lab.Config.Flags) and waits until they are all connected; the logs are
// printed if the test fails (or SG_E2E_LOGS is set).
func startClusterWith(t *testing.T, flags map[string][]string, names ...string) *lab.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c, err := lab.Start(ctx, lab.Config{Bin: binDir, Dir: t.TempDir(), Names: names, Flags: flags})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() || os.Getenv("SG_E2E_LOGS") != "" {
			t.Log(c.Logs())
		}
	})
	if err := c.WaitConnected(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return c
}

func writeRandomFile(t *testing.T, size int) (string, []byte) {
	t.Helper()
	data := make([]byte, size)
	for i := 0; i < size; i += 8 {
		// xorshift: fast, deterministic, incompressible enough.
		x := uint64(i)*0x9e3779b97f4a7c15 + 1
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		for j := 0; j < 8 && i+j < size; j++ {
			data[i+j] = byte(x >> (8 * j))
		}
	}
	path := filepath.Join(t.TempDir(), "input.bin")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, data
}
