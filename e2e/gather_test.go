package e2e

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/fetch/fuseview"
	"github.com/sgrelay/sg/internal/lab"
	"github.com/sgrelay/sg/internal/testenv"
)

// lazyDir waits until the destination has a lazy view for vm.
func lazyDir(t *testing.T, ctx context.Context, dst *lab.Node, vm string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var ms []api.Migration
		if err := dst.SgctlJSON(ctx, &ms, "migrations"); err == nil {
			for _, m := range ms {
				if m.VM == vm && m.Gather != nil && m.Gather.Lazy != "" {
					return m.Gather.Lazy
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no lazy view appeared at the destination")
	return ""
}

// While the scatter of a 256 MiB VM runs (the source capped so it lasts a
// while), a reader on the destination's FUSE file reads random pages and
// gets the right bytes; at the end the materialized images are identical.
func TestLazyFUSEReadsDuringScatter(t *testing.T) {
	testenv.Need(t, "FUSE", fuseview.Available())
	c := startCluster(t, "src", "dst", "r1", "r2", "r3")
	src, dst := c.Nodes[0], c.Nodes[1]
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	spec := vmSpec(11)
	spec.DiskSize = 0 // a 256 MiB VM: its memory
	images := addVM(t, ctx, src, "web1", spec)
	want, err := os.ReadFile(images[0])
	if err != nil {
		t.Fatal(err)
	}

	type outcome struct {
		res api.EvictResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		var o outcome
		o.err = src.SgctlJSON(ctx, &o.res, "evict", "vm", "web1", "--to", dst.PeerID, "--max-rate", "160Mbit")
		done <- o
	}()
	f, err := os.Open(filepath.Join(lazyDir(t, ctx, dst, "web1"), "mem"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(5, 5))
	buf := make([]byte, 4096)
	during := 0
	var o outcome
	for finished := false; !finished; {
		select {
		case o = <-done:
			finished = true
		default:
		}
		off := int64(r.IntN(len(want)/4096)) * 4096
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatalf("read lazy mem at %d: %v", off, err)
		}
		if !bytes.Equal(buf, want[off:off+4096]) {
			t.Fatalf("lazy mem at %d: wrong bytes", off)
		}
		if !finished {
			during++
		}
	}
	if o.err != nil {
		t.Fatal(o.err)
	}
	if during < 20 {
		t.Fatalf("only %d reads happened while the scatter ran: the test did not test reading during it", during)
	}
	m := waitGathered(t, ctx, dst, "web1")
	sameFiles(t, m.Gather.Files, images[:1])
	if m.Gather.DemandReads == 0 {
		t.Fatal("no demand read was recorded")
	}
	t.Logf("%d random reads verified while the scatter ran (ET %v); TMT %v; first demand read served %v after open; %d demand reads, %d waited for the network, %d read from the source by position",
		during, o.res.ET, m.Gather.TMT, m.Gather.FirstDemand, m.Gather.DemandReads, m.Gather.NetworkFaults, m.Gather.SourceChunks)
}

// The destination exports the disk over NBD as soon as the migration
// opens; qemu-img converts it to a file byte-identical to the source disk.
func TestNBDExportOfGatheredDisk(t *testing.T) {
	testenv.Tool(t, "apt-get install qemu-utils", "qemu-img")
	c := startCluster(t, "src", "dst", "r1")
	src, dst := c.Nodes[0], c.Nodes[1]
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	spec := vmSpec(12)
	spec.MemSize, spec.DiskSize = 32<<20, 64<<20
	images := addVM(t, ctx, src, "db1", spec)
	done := make(chan error, 1)
	go func() {
		_, err := src.Sgctl(ctx, "evict", "vm", "db1", "--to", dst.PeerID, "--max-rate", "200Mbit")
		done <- err
	}()
	// Wait for the export, then copy it while the scatter still runs.
	var sock string
	for deadline := time.Now().Add(30 * time.Second); sock == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var ms []api.Migration
		if err := dst.SgctlJSON(ctx, &ms, "migrations"); err == nil && len(ms) > 0 && ms[0].Gather != nil {
			sock = ms[0].Gather.NBD["disk0"]
		}
	}
	if sock == "" {
		t.Fatal("no NBD export of disk0 at the destination")
	}
	out := filepath.Join(t.TempDir(), "disk0.raw")
	if b, err := exec.CommandContext(ctx, "qemu-img", "convert", "-f", "raw", "-O", "raw", "nbd+unix:///disk0?socket="+sock, out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, b)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sameFiles(t, []string{out}, images[1:])
	m := waitGathered(t, ctx, dst, "db1")
	sameFiles(t, m.Gather.Files, images)
}

// sgctl gather brings a VM whose manifest already exists to another node,
// from the peers that hold it (the first destination keeps the chunks it
// gathered in its store); the copy is byte-identical.
func TestGatherExistingManifest(t *testing.T) {
	c := startClusterWith(t, map[string][]string{"dst": {"--keep-gathered-chunks"}}, "src", "dst", "r1", "other")
	src, dst, other := c.Nodes[0], c.Nodes[1], c.Nodes[3]
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	spec := vmSpec(13)
	spec.MemSize, spec.DiskSize = 32<<20, 16<<20
	images := addVM(t, ctx, src, "app1", spec)
	var res api.EvictResult
	if err := src.SgctlJSON(ctx, &res, "evict", "vm", "app1", "--to", dst.PeerID, "--via", c.Nodes[2].PeerID); err != nil {
		t.Fatal(err)
	}
	waitGathered(t, ctx, dst, "app1")
	var rep api.GatherReport
	if err := other.SgctlJSON(ctx, &rep, "gather", res.VMs[0].Manifest, "--from", dst.PeerID); err != nil {
		t.Fatal(err)
	}
	if !rep.Complete || rep.FetchedBytes[dst.PeerID] == 0 {
		t.Fatalf("gather report %+v", rep)
	}
	sameFiles(t, rep.Files, images)
}

// The lazy FUSE file survives what a hypervisor does to guest RAM: 2 MiB
// reads, mmap MAP_PRIVATE (writes stay private) and MAP_SHARED read-write
// (writes land in the local copy, never on the network), while the
// scatter still runs.
func TestLazyFUSEMmap(t *testing.T) {
	testenv.Need(t, "FUSE", fuseview.Available())
	c := startCluster(t, "src", "dst", "r1")
	src, dst := c.Nodes[0], c.Nodes[1]
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	spec := vmSpec(14)
	spec.MemSize, spec.DiskSize = 64<<20, 0
	images := addVM(t, ctx, src, "vm1", spec)
	want, err := os.ReadFile(images[0])
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := src.Sgctl(ctx, "evict", "vm", "vm1", "--to", dst.PeerID, "--max-rate", "80Mbit")
		done <- err
	}()
	f, err := os.OpenFile(filepath.Join(lazyDir(t, ctx, dst, "vm1"), "mem"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	// A 2 MiB window, as QEMU reads guest RAM.
	win := make([]byte, 2<<20)
	if _, err := f.ReadAt(win, 8<<20); err != nil || !bytes.Equal(win, want[8<<20:10<<20]) {
		t.Fatalf("2 MiB read: %v", err)
	}
	// MAP_PRIVATE: reads are right, writes stay in this mapping.
	priv, err := syscall.Mmap(int(f.Fd()), 16<<20, 4<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(priv, want[16<<20:20<<20]) {
		t.Fatal("MAP_PRIVATE mapping shows wrong bytes")
	}
	priv[0] ^= 0xff
	syscall.Munmap(priv)
	// MAP_SHARED read-write: a page written by the "guest" lands in the
	// destination's copy.
	shared, err := syscall.Mmap(int(f.Fd()), 32<<20, 4<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(shared, want[32<<20:36<<20]) {
		t.Fatal("MAP_SHARED mapping shows wrong bytes")
	}
	pattern := bytes.Repeat([]byte("sg"), 2048)
	copy(shared[4096:8192], pattern)
	if _, _, e := syscall.Syscall(syscall.SYS_MSYNC, uintptr(unsafe.Pointer(&shared[0])), uintptr(len(shared)), syscall.MS_SYNC); e != 0 {
		t.Fatalf("msync: %v", e)
	}
	syscall.Munmap(shared)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	m := waitGathered(t, ctx, dst, "vm1")
	got, err := os.ReadFile(m.Gather.Files[0])
	if err != nil {
		t.Fatal(err)
	}
	copy(want[32<<20+4096:], pattern) // the guest's write
	if !bytes.Equal(got, want) {
		t.Fatal("the destination's copy is not the source's image plus the guest's shared write (and nothing else)")
	}
}
