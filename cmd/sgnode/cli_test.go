package main

import (
	"context"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/internal/cli"
	"github.com/sgrelay/sg/internal/cli/clitest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func TestMain(m *testing.M) {
	os.Unsetenv("SG_DATA") // the help shows the default data directory
	os.Exit(m.Run())
}

func newTestRoot() *cobra.Command { return newRootCmd("v0.0.0-test", io.Discard, io.Discard) }

func TestHelp(t *testing.T)    { clitest.CheckHelp(t, newTestRoot, *update) }
func TestVersion(t *testing.T) { clitest.CheckVersion(t, newTestRoot, *update) }

func TestBadInputs(t *testing.T) {
	const data = "/nonexistent/sg" // each is refused before the data directory is read
	clitest.CheckBadInputs(t, newTestRoot, []clitest.BadInput{
		{Args: []string{"init", "--data", data, "--port", "99999"}, Flag: "--port"},
		{Args: []string{"init", "--data", data, "--port", "0"}, Flag: "--port"},
		{Args: []string{"init", "--data", data, "--port", "http"}, Flag: "--port"},
		{Args: []string{"run", "--data", data, "--mem-budget", "NaN"}, Flag: "--mem-budget"},
		{Args: []string{"run", "--data", data, "--disk-budget", "-1GiB"}, Flag: "--disk-budget"},
		{Args: []string{"run", "--data", data, "--ingest-rate", "100"}, Flag: "--ingest-rate"},
		{Args: []string{"run", "--data", data, "--uplink", "10Gb/h"}, Flag: "--uplink"},
		{Args: []string{"run", "--data", data, "--downlink", "Inf"}, Flag: "--downlink"},
		{Args: []string{"run", "--data", data, "--request-rate", "-1"}, Flag: "--request-rate"},
		{Args: []string{"run", "--data", data, "--migration-records", "-1"}, Flag: "--migration-records"},
	}, *update)
}

// A mistyped --data must not start a node with a new identity: run
// refuses it, says how to make one, and creates nothing.
func TestRunRefusesDataWithoutIdentity(t *testing.T) {
	data := filepath.Join(t.TempDir(), "typo")
	r := clitest.Run(newTestRoot, "run", "--data", data)
	if r.Code != cli.ExitUsage || !strings.Contains(r.Stderr, "sgnode init --data "+data) || !strings.Contains(r.Stderr, "--init") {
		t.Fatalf("run on an empty data directory: exit %d, %q", r.Code, r.Stderr)
	}
	if _, err := os.Stat(data); err == nil {
		t.Fatal("run created the data directory")
	}
	if r := clitest.Run(newTestRoot, "id", "--data", data); r.Code != cli.ExitUsage || !strings.Contains(r.Stderr, "sgnode init") {
		t.Fatalf("id on an empty data directory: exit %d, %q", r.Code, r.Stderr)
	}
}

// run --init makes the identity and config as init does, then runs (here
// until its context, already ended, stops it).
func TestRunInit(t *testing.T) {
	data := filepath.Join(t.TempDir(), "new")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	code := cli.Execute(ctx, newTestRoot(), []string{"run", "--init", "--data", data, "--listen", "/ip4/127.0.0.1/udp/0/quic-v1"}, io.Discard, io.Discard)
	if code != cli.ExitOK {
		t.Fatalf("run --init: exit %d", code)
	}
	for _, f := range []string{"identity.key", "sgnode.toml"} {
		if _, err := os.Stat(filepath.Join(data, f)); err != nil {
			t.Error(err)
		}
	}
}

func TestInitPort(t *testing.T) {
	data := t.TempDir()
	r := clitest.Run(newTestRoot, "init", "--data", data, "--port", "4242")
	if r.Code != 0 {
		t.Fatalf("init: exit %d: %s", r.Code, r.Stderr)
	}
	b, err := os.ReadFile(filepath.Join(data, "sgnode.toml"))
	if err != nil || !strings.Contains(string(b), "/udp/4242/quic-v1") {
		t.Fatalf("config of init --port 4242: %v\n%s", err, b)
	}
}

// notifyReady sends systemd's READY=1 datagram to $NOTIFY_SOCKET.
func TestNotifyReady(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	if err := notifyReady(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), "READY=1\n") {
		t.Fatalf("notification %q, %v; want READY=1", buf[:n], err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := notifyReady(); err != nil {
		t.Fatalf("without systemd: %v", err)
	}
}
