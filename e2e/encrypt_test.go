package e2e

import (
	"context"
	"encoding/binary"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/chunk"
)

// TestEvictEncryptedRelaysHoldNoPlaintext evicts two VMs of one base with
// --encrypt through two relays that keep everything on disk, then scans
// every byte the relays wrote for the VMs' pages: none is there, while
// the shared chunks still travel once and the destination's files are
// byte-identical. An unencrypted eviction of the same VMs (control) is
// found by the same scan, so the scan can see plaintext when it is there.
func TestEvictEncryptedRelaysHoldNoPlaintext(t *testing.T) {
	onDisk := []string{"--mem-budget", "0", "--disk-budget", "1GiB"}
	for _, encrypt := range []bool{true, false} {
		name := map[bool]string{true: "encrypted", false: "control"}[encrypt]
		t.Run(name, func(t *testing.T) {
			// dst keeps its gathered chunks: the VM is gathered again from it
			// below.
			c := startClusterWith(t, map[string][]string{
				"dst": {"--ingest-rate", "200Mbit", "--keep-gathered-chunks"}, "r1": onDisk, "r2": onDisk,
			}, "src", "dst", "r1", "r2")
			src, dst := c.Nodes[0], c.Nodes[1]
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			a, b := vmSpec(11), vmSpec(12)
			a.MemSize, a.DiskSize, b.MemSize, b.DiskSize = 32<<20, 16<<20, 32<<20, 16<<20
			images := append(addVM(t, ctx, src, "a", a), addVM(t, ctx, src, "b", b)...)

			args := []string{"evict", "vm", "a", "b", "--to", dst.PeerID}
			if encrypt {
				args = append(args, "--encrypt")
			}
			before := received(t, ctx, c.Nodes)
			var res api.EvictResult
			if err := src.SgctlJSON(ctx, &res, args...); err != nil {
				t.Fatal(err)
			}
			pushed := sum(received(t, ctx, c.Nodes)) - sum(before)
			want := uniqueBytes(a, b) + res.ManifestPushed
			t.Logf("ET %v; pushed %d KiB for %d KiB unique + manifest (%d KiB endgame spares); per target %v",
				res.ET, pushed>>10, want>>10, res.EndgameBytes>>10, res.SentBytes)
			if pushed < want || pushed > want+res.EndgameBytes {
				t.Fatalf("receivers stored %d bytes; shared chunks travelling once means %d (+ at most endgame %d)", pushed, want, res.EndgameBytes)
			}
			if encrypt != (res.VMs[0].ManifestSecret != "") {
				t.Fatalf("encrypt %v, manifest secret %q", encrypt, res.VMs[0].ManifestSecret)
			}

			pages := pagePrefixes(t, images, int(a.PageSize))
			var relayBytes int64
			for _, r := range c.Nodes[2:] {
				n, found := scanForPages(t, r.Dir, pages)
				relayBytes += res.SentBytes[r.PeerID]
				t.Logf("%s: scanned %d KiB on disk, %d VM pages found", r.Name, n>>10, found)
				if encrypt && found > 0 {
					t.Errorf("%s stores %d plaintext pages of the VMs", r.Name, found)
				}
				if !encrypt && res.SentBytes[r.PeerID] > 0 && found == 0 {
					t.Errorf("control: %s took %d bytes in plaintext, and the scan found none of them", r.Name, res.SentBytes[r.PeerID])
				}
			}
			if relayBytes == 0 {
				t.Fatal("the relays took nothing: nothing was scanned")
			}
			for i, vm := range []string{"a", "b"} {
				m := waitGathered(t, ctx, dst, vm)
				sameFiles(t, m.Gather.Files, images[2*i:2*i+2])
			}
			if !encrypt {
				return
			}
			// Elsewhere, a sealed manifest gathers only with its secret.
			other := c.Nodes[2]
			_, refused := other.Sgctl(ctx, "gather", res.VMs[0].Manifest, "--from", dst.PeerID)
			if refused == nil || !strings.Contains(refused.Error(), "secret") {
				t.Fatalf("gather of a sealed manifest without its secret: %v", refused)
			}
			var rep api.GatherReport
			if err := other.SgctlJSON(ctx, &rep, "gather", res.VMs[0].Manifest, "--from", dst.PeerID, "--secret", res.VMs[0].ManifestSecret, "--json"); err != nil {
				t.Fatalf("gather with the secret: %v", err)
			}
			sameFiles(t, rep.Files, images[:2])
			t.Logf("gathered elsewhere with the secret; without it: %v", refused)
		})
	}
}

// pagePrefixes indexes the first 8 bytes of every non-zero page (the
// scan then confirms a match on the whole page).
func pagePrefixes(t *testing.T, images []string, page int) map[uint64][][]byte {
	t.Helper()
	out := map[uint64][][]byte{}
	for _, path := range images {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+page <= len(data); off += page {
			p := data[off : off+page]
			if !chunk.IsZeroData(p) {
				k := binary.LittleEndian.Uint64(p)
				out[k] = append(out[k], p)
			}
		}
	}
	return out
}

// scanForPages reads every file under dir and counts the places where a
// whole page of the index appears, at any offset. It returns the bytes
// scanned.
func scanForPages(t *testing.T, dir string, pages map[uint64][][]byte) (scanned int64, found int) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Type()&fs.ModeSocket != 0 {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		scanned += int64(len(data))
		for i := 0; i+8 <= len(data); i++ {
			for _, p := range pages[binary.LittleEndian.Uint64(data[i:])] {
				if i+len(p) <= len(data) && string(data[i:i+len(p)]) == string(p) {
					found++
					break
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return scanned, found
}
