package e2e

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/workload"
)

// TestEvictReportSaysWhatCrossedTheWire evicts a VM whose every chunk the
// destination already holds: the human report says no chunk bytes were
// sent, rather than the VM's unique bytes.
func TestEvictReportSaysWhatCrossedTheWire(t *testing.T) {
	c := startClusterWith(t, map[string][]string{"dst": {"--keep-gathered-chunks"}}, "src", "dst")
	src, dst := c.Nodes[0], c.Nodes[1]
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	spec := workload.Spec{Seed: 7, BaseSeed: 8, MemSize: 4 << 20, PageSize: 4096}
	addVM(t, ctx, src, "first", spec)
	if _, err := src.Sgctl(ctx, "evict", "vm", "first", "--to", dst.PeerID); err != nil {
		t.Fatal(err)
	}
	waitGathered(t, ctx, dst, "first")
	addVM(t, ctx, src, "again", spec) // the same pages
	out, err := src.Sgctl(ctx, "evict", "vm", "again", "--to", dst.PeerID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "1024 already at the destination") || !strings.Contains(string(out), "sent           0 B of chunks") {
		t.Fatalf("report of an eviction with nothing to send:\n%s", out)
	}
}

// TestEncryptedEvictionKeepsTheSecret: the human report of an encrypted
// eviction prints the manifest's secret and where the source keeps it
// (mode 0600), and sgctl migrations --json has it too.
func TestEncryptedEvictionKeepsTheSecret(t *testing.T) {
	c := startCluster(t, "src", "dst", "r1")
	src, dst := c.Nodes[0], c.Nodes[1]
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	addVM(t, ctx, src, "sealed", workload.Spec{Seed: 9, BaseSeed: 10, MemSize: 4 << 20, PageSize: 4096})
	out, err := src.Sgctl(ctx, "evict", "vm", "sealed", "--to", dst.PeerID, "--encrypt")
	if err != nil {
		t.Fatal(err)
	}
	var secret, file string
	for _, line := range strings.Split(string(out), "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "secret "); ok {
			secret = s
		}
		if f, ok := strings.CutPrefix(strings.TrimSpace(line), "kept on this node in "); ok {
			file, _, _ = strings.Cut(f, " ")
		}
	}
	if len(secret) < 32 || file == "" {
		t.Fatalf("the report does not give the secret and its file:\n%s", out)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file %s: %v, %v; want mode 0600", file, fi, err)
	}
	if b, _ := os.ReadFile(file); strings.TrimSpace(string(b)) != secret {
		t.Fatalf("secret file holds %q, the report %q", b, secret)
	}
	raw, err := src.Sgctl(ctx, "migrations", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var ms []api.Migration
	if err := json.Unmarshal(raw, &ms); err != nil || len(ms) != 1 || ms[0].Result == nil || ms[0].Result.VMs[0].ManifestSecret != secret {
		t.Fatalf("sgctl migrations --json does not give the secret: %v\n%s", err, raw)
	}
}

// TestGetUnheldCID: a CID that no peer holds fails with a plain message.
func TestGetUnheldCID(t *testing.T) {
	c := startCluster(t, "a", "b")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cid := chunk.Sum([]byte("nobody holds this")).String()
	_, err := c.Nodes[0].Sgctl(ctx, "get", cid, "-o", t.TempDir()+"/out")
	if err == nil || !strings.Contains(err.Error(), "no connected peer holds "+cid) || strings.Contains(err.Error(), "%!") {
		t.Fatalf("get of a CID nobody holds: %v", err)
	}
}

// TestCompletionAsksTheNode: sgctl's shell completion offers the node's
// registered VMs and connected peers.
func TestCompletionAsksTheNode(t *testing.T) {
	c := startCluster(t, "a", "b")
	a, b := c.Nodes[0], c.Nodes[1]
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	addVM(t, ctx, a, "web1", workload.Spec{Seed: 1, BaseSeed: 2, MemSize: 1 << 20, PageSize: 4096})
	vms, err := a.Sgctl(ctx, "__complete", "evict", "vm", "")
	if err != nil || !strings.Contains(string(vms), "web1\tfiles") {
		t.Fatalf("completion of evict vm: %v\n%s", err, vms)
	}
	peers, err := a.Sgctl(ctx, "__complete", "evict", "vm", "web1", "--to", "")
	if err != nil || !strings.Contains(string(peers), b.PeerID) {
		t.Fatalf("completion of --to: %v\n%s", err, peers)
	}
}
