package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/cluster"
	"github.com/sgrelay/sg/internal/daemon"
	"github.com/sgrelay/sg/internal/eviction"
	"github.com/sgrelay/sg/internal/fetch/fuseview"
	"github.com/sgrelay/sg/internal/lab"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/node"
	"github.com/sgrelay/sg/internal/testenv"
	"github.com/sgrelay/sg/internal/vm/qemu"
)

// guestKernelDir is where .ci/guest-kernel unpacks the Debian cloud
// kernel; SG_GUEST_KERNEL_DIR overrides it.
const guestKernelDir = "/var/cache/sg/guest-kernel"

// patternSize is the seeded data the guest keeps in RAM and on its disk.
const patternSize = 16 << 20

// guestInit is the guest's /init: it loads the virtio modules, writes the
// pattern (in its RAM: the initramfs) to its disk, then every second
// prints a counter and the checksums of the pattern in RAM and on disk,
// the disk read afresh (page cache dropped) so that the reads reach the
// disk's backend.
const guestInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for pass in 1 2; do
  for m in virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
    insmod /lib/$m.ko 2>/dev/null
  done
done
dd if=/pattern of=/dev/vda bs=1M conv=fsync 2>/dev/null
n=0
while true; do
  echo 3 > /proc/sys/vm/drop_caches
  m=$(md5sum /pattern | cut -c1-32)
  d=$(dd if=/dev/vda bs=1M count=16 2>/dev/null | md5sum | cut -c1-32)
  echo "sg-guest n=$n mem=$m disk=$d"
  n=$((n+1))
  sleep 1
done
`

// guest is what the QEMU test boots: kernel, initramfs and the checksum
// of the pattern.
type guest struct {
	kernel, initrd string
	sum            string
}

// buildGuest makes a busybox initramfs holding the virtio modules of the
// cloud kernel and a pattern from a fixed seed; it skips the test with
// -short, or when QEMU, busybox, cpio, FUSE or the kernel is missing.
func buildGuest(t *testing.T) guest {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a guest under TCG")
	}
	testenv.Tool(t, ".ci/run installs qemu-system-x86, busybox-static, cpio", "qemu-system-x86_64", "busybox", "cpio", "gzip")
	testenv.Need(t, "lazy FUSE views", fuseview.Available())
	kdir := os.Getenv("SG_GUEST_KERNEL_DIR")
	if kdir == "" {
		kdir = guestKernelDir
	}
	kernels, _ := filepath.Glob(filepath.Join(kdir, "boot", "vmlinuz-*"))
	if len(kernels) == 0 {
		testenv.Missing(t, "a guest kernel in %s (run .ci/guest-kernel)", kdir)
	}
	release := filepath.Base(kernels[0])[len("vmlinuz-"):]
	root := filepath.Join(t.TempDir(), "initramfs")
	for _, d := range []string{"bin", "lib", "proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mods := filepath.Join(kdir, "lib", "modules", release, "kernel", "drivers")
	for _, m := range []string{"virtio/virtio", "virtio/virtio_ring", "virtio/virtio_pci_legacy_dev",
		"virtio/virtio_pci_modern_dev", "virtio/virtio_pci", "block/virtio_blk"} {
		copyFile(t, filepath.Join(mods, m+".ko"), filepath.Join(root, "lib", filepath.Base(m)+".ko"))
	}
	bb, _ := exec.LookPath("busybox")
	copyFile(t, bb, filepath.Join(root, "bin", "busybox"))
	if err := os.Chmod(filepath.Join(root, "bin", "busybox"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(guestInit), 0o755); err != nil {
		t.Fatal(err)
	}
	pattern := make([]byte, patternSize)
	rng := rand.New(rand.NewPCG(6, 6))
	for i := 0; i < len(pattern); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			pattern[i+j] = byte(v >> (8 * j))
		}
	}
	if err := os.WriteFile(filepath.Join(root, "pattern"), pattern, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum(pattern)
	initrd := filepath.Join(t.TempDir(), "initrd.gz")
	pack := exec.Command("sh", "-c", "find . | cpio -o -H newc 2>/dev/null | gzip -1 > "+initrd)
	pack.Dir = root
	if out, err := pack.CombinedOutput(); err != nil {
		t.Fatalf("pack initramfs: %v: %s", err, out)
	}
	return guest{kernel: kernels[0], initrd: initrd, sum: hex.EncodeToString(sum[:])}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

var guestLine = regexp.MustCompile(`sg-guest n=(\d+) mem=([0-9a-f]{32}) disk=([0-9a-f]{32})`)

// guestLineAt is one line the guest printed.
type guestLineAt struct {
	n         int
	mem, disk string
}

// guestLines reads the counter lines of a serial log.
func guestLines(path string) []guestLineAt {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []guestLineAt
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := guestLine.FindStringSubmatch(sc.Text()); m != nil {
			n, _ := strconv.Atoi(m[1])
			out = append(out, guestLineAt{n, m[2], m[3]})
		}
	}
	return out
}

// waitGuestLine waits until the serial log at path has a counter line
// that ok accepts, and returns it.
func waitGuestLine(ctx context.Context, path string, ok func(guestLineAt) bool) (guestLineAt, error) {
	for {
		for _, l := range guestLines(path) {
			if ok(l) {
				return l, nil
			}
		}
		select {
		case <-ctx.Done():
			log, _ := os.ReadFile(path)
			return guestLineAt{}, fmt.Errorf("no such line in %s: %w\n%s", path, ctx.Err(), log)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestQEMUGuestEviction evicts a running QEMU guest (TCG) from src to dst
// through two intermediates, all real sgnode processes. dst takes at most
// 100 Mbit/s (a busy destination), so its gather outlasts the resume:
// the guest must run at dst on lazily gathered memory and disk, continue
// its counter with the same checksums, and the source's QEMU must be gone.
// At dst QEMU runs unprivileged and sandboxed, on the views and on the
// local files.
func TestQEMUGuestEviction(t *testing.T) {
	g := buildGuest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	c := startClusterWith(t, map[string][]string{"dst": {"--ingest-rate", "100Mbit"}}, "src", "dst", "r1", "r2")
	src, dst := c.Nodes[0], c.Nodes[1]
	killGuestsAtCleanup(t, dst)

	qmp, serial, srcExited := startSourceGuest(t, ctx, g)
	if _, err := src.Sgctl(ctx, "vm", "add", "web1", "--qemu-qmp", qmp); err != nil {
		t.Fatal(err)
	}
	var res api.EvictResult
	if err := src.SgctlJSON(ctx, &res, "evict", "vm", "web1", "--to", dst.PeerID); err != nil {
		t.Fatal(err)
	}
	var destPID int
	select {
	case <-srcExited:
		srcExited <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("the source's QEMU still runs 30 s after the eviction")
	}
	// The source printed its last line before the pause.
	lines := guestLines(serial)
	lastAtSource := lines[len(lines)-1]

	guestRec, err := waitGuest(ctx, dst, "web1")
	if err != nil {
		t.Fatal(err)
	}
	destPID = guestRec.Guest.PID
	assertConfined(t, destPID)
	m, err := dst.WaitGathered(ctx, "web1")
	if err != nil {
		t.Fatal(err)
	}
	gr, gg := m.Guest, m.Gather
	t.Logf("ET %v; guest running at dst %v after the migration opened there (downtime %v); TMT %v; "+
		"demand reads %d (network faults %d, first %v); VM %d MiB, %d MiB unique, sent %v",
		res.ET, gr.ResumedAfter, gr.Downtime, gg.TMT, gg.DemandReads, gg.NetworkFaults, gg.FirstDemand,
		m.Bytes>>20, res.UniqueBytes>>20, res.SentBytes)
	if gr.ResumedAfter >= gg.TMT {
		t.Errorf("guest resumed %v after the start, not before gather completed (TMT %v)", gr.ResumedAfter, gg.TMT)
	}
	// Reads that waited for the network after the guest started are the
	// guest's own (through the FUSE and NBD views).
	atResume := guestRec.Gather.NetworkFaults
	t.Logf("network faults: %d before the guest ran (its state, kernel, initrd), %d by the running guest",
		atResume, gg.NetworkFaults-atResume)
	// QEMU's own reads (its state, the kernel, the initrd) went through
	// the lazy views while the gather ran. Whether the running guest then
	// also waits depends on how much prefetch (around those faults) has
	// brought by then: its small working set is often all here already,
	// so that is only reported.
	if atResume == 0 || gg.FirstDemand >= gg.TMT {
		t.Errorf("no read waited for the network during the gather: %d faults at resume, %d at the end, first demand %v, TMT %v",
			atResume, gg.NetworkFaults, gg.FirstDemand, gg.TMT)
	}

	// Once the gather is complete, sgnode moves the guest onto the
	// gathered local files: it runs on without sgnode.
	settled, err := waitGuestLocal(ctx, dst, "web1")
	if err != nil {
		t.Fatal(err)
	}
	destPID = settled.Guest.PID
	assertConfined(t, destPID)
	t.Logf("moved onto local files (pause %v), pid %d", settled.Guest.SettleDowntime, destPID)
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", destPID))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(cmdline, []byte(gg.Files[4])) || bytes.Contains(cmdline, []byte(gg.Lazy)) {
		t.Fatalf("settled guest does not run on the gathered files (%s): %q", gg.Files[4], cmdline)
	}
	if err := dst.Stop(); err != nil {
		t.Fatal(err)
	}
	// The guest continues its counter at dst where it stopped at src, with
	// the same checksums: on the views, then on the local files, and on
	// after sgnode stopped.
	atStop := append(guestLines(gr.Serial), guestLines(settled.Guest.Serial)...)
	lastN := lastAtSource.n
	if len(atStop) > 0 {
		lastN = atStop[len(atStop)-1].n
	}
	if _, err := waitGuestLine(ctx, settled.Guest.Serial, func(l guestLineAt) bool { return l.n >= lastN+3 }); err != nil {
		t.Fatal(err)
	}
	atDest := append(guestLines(gr.Serial), guestLines(settled.Guest.Serial)...)
	t.Logf("at dst: %d lines on the views, %d on local files (%d after sgnode stopped)",
		len(guestLines(gr.Serial)), len(guestLines(settled.Guest.Serial)), len(atDest)-len(atStop))
	for i, l := range atDest {
		if l.n != lastAtSource.n+1+i || l.mem != g.sum || l.disk != g.sum {
			t.Fatalf("line %d at the destination: %+v, want n=%d mem=disk=%s", i, l, lastAtSource.n+1+i, g.sum)
		}
	}
}

// assertConfined fails t unless process pid runs as a user other than
// root, under a seccomp filter (QEMU's -sandbox).
func assertConfined(t *testing.T, pid int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var uids []string
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			uids = strings.Fields(rest)
		}
	}
	if len(uids) != 4 || slices.Contains(uids, "0") || !strings.Contains(string(b), "Seccomp:\t2") {
		t.Fatalf("the destination's QEMU (pid %d) is not unprivileged and sandboxed:\n%s", pid, b)
	}
	t.Logf("the destination's QEMU (pid %d) runs as uid %s under seccomp", pid, uids[0])
}

// sourceGuest boots the test guest as an operator would run it, waits
// until it has printed its checksums twice (checked), and returns its QMP
// socket, its serial log and a channel that receives its exit.
func startSourceGuest(t *testing.T, ctx context.Context, g guest) (qmp, serial string, exited chan error) {
	t.Helper()
	dir := t.TempDir()
	disk := filepath.Join(dir, "web1.disk")
	if err := os.Truncate(createFile(t, disk), 64<<20); err != nil {
		t.Fatal(err)
	}
	qmp, serial = filepath.Join(dir, "qmp.sock"), filepath.Join(dir, "serial.log")
	cmd := exec.Command("qemu-system-x86_64", "-accel", "tcg", "-nodefaults", "-display", "none",
		"-machine", "q35,memory-backend=mem", "-m", "256M",
		"-object", "memory-backend-file,id=mem,size=256M,mem-path="+filepath.Join(dir, "web1.mem")+",share=on",
		"-kernel", g.kernel, "-initrd", g.initrd, "-append", "console=ttyS0 quiet",
		"-drive", "file="+disk+",format=raw,if=virtio,cache=none",
		"-serial", "file:"+serial, "-qmp", "unix:"+qmp+",server=on,wait=off")
	qemuLog, err := os.Create(filepath.Join(dir, "qemu.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = qemuLog, qemuLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited = make(chan error, 1)
	go func() { exited <- cmd.Wait(); qemuLog.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		err := <-exited
		exited <- err
	})
	bootCtx, bootCancel := context.WithTimeout(ctx, 2*time.Minute)
	defer bootCancel()
	last, err := waitGuestLine(bootCtx, serial, func(l guestLineAt) bool { return l.n >= 2 })
	if err != nil {
		t.Fatal(err)
	}
	if last.mem != g.sum || last.disk != g.sum {
		t.Fatalf("source guest checksums %s/%s, want %s", last.mem, last.disk, g.sum)
	}
	return qmp, serial, exited
}

// killGuestsAtCleanup kills, when the test ends (before the cluster
// stops), every QEMU that n started for a guest: they are daemonized and
// would outlive a failed test.
func killGuestsAtCleanup(t *testing.T, n *lab.Node) {
	t.Cleanup(func() {
		pids, _ := filepath.Glob(filepath.Join(n.Dir, "guests", "*", "qemu.pid"))
		local, _ := filepath.Glob(filepath.Join(n.Dir, "guests", "*", "local", "qemu.pid"))
		for _, f := range append(pids, local...) {
			b, err := os.ReadFile(f)
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
}

func createFile(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}

// waitGuestLocal waits until n reports vm's guest moved onto local files.
func waitGuestLocal(ctx context.Context, n *lab.Node, vm string) (api.Migration, error) {
	for {
		m, err := waitGuest(ctx, n, vm)
		if err != nil || m.Guest.Local {
			return m, err
		}
		if m.Guest.Error != "" {
			return m, fmt.Errorf("guest %s not moved onto local files: %s", vm, m.Guest.Error)
		}
		select {
		case <-ctx.Done():
			return m, fmt.Errorf("guest %s not moved onto local files: %w", vm, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitGuest waits until n reports vm's guest running (or failed).
func waitGuest(ctx context.Context, n *lab.Node, vm string) (api.Migration, error) {
	for {
		var ms []api.Migration
		if err := n.SgctlJSON(ctx, &ms, "migrations"); err != nil {
			return api.Migration{}, err
		}
		for _, m := range ms {
			if m.VM == vm && m.Role == "destination" && m.Guest != nil {
				switch m.Guest.State {
				case api.GuestRunning:
					return m, nil
				case api.GuestFailed:
					return m, fmt.Errorf("guest %s not resumed: %s", vm, m.Guest.Error)
				}
			}
		}
		select {
		case <-ctx.Done():
			return api.Migration{}, fmt.Errorf("guest %s not running: %w", vm, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestQEMUEvictionAbortedGuestStaysAtSource aborts an eviction (the
// operator's Ctrl-C on sgctl) after the destination has started the guest:
// the destination stops its copy before the source continues its guest,
// so the guest never runs in two places, and it goes on counting at the
// source with the same checksums.
func TestQEMUEvictionAbortedGuestStaysAtSource(t *testing.T) {
	g := buildGuest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	c := startClusterWith(t, nil, "src", "dst", "r1")
	src, dst := c.Nodes[0], c.Nodes[1]
	killGuestsAtCleanup(t, dst)
	qmp, serial, srcExited := startSourceGuest(t, ctx, g)
	if _, err := src.Sgctl(ctx, "vm", "add", "web1", "--qemu-qmp", qmp); err != nil {
		t.Fatal(err)
	}
	evictCtx, abort := context.WithCancel(ctx)
	evicted := make(chan error, 1)
	go func() { // waited for below
		_, err := src.Sgctl(evictCtx, "evict", "vm", "web1", "--to", dst.PeerID, "--max-rate", "30Mbit")
		evicted <- err
	}()
	rec, err := waitGuest(ctx, dst, "web1")
	if err != nil {
		abort()
		<-evicted
		t.Fatal(err)
	}
	destPID := rec.Guest.PID
	abort()
	if err := <-evicted; err == nil {
		t.Fatal("the aborted eviction succeeded")
	}

	// The destination stopped its copy before the source continued its
	// own (the source waits for the destination's answer to its abort):
	// once the source guest runs, the destination's must be stopped.
	for {
		q, err := qemu.DialQMP(ctx, qmp)
		if err != nil {
			t.Fatal(err)
		}
		st, err := q.Status(ctx)
		q.Close()
		if err != nil {
			t.Fatal(err)
		}
		if st == "running" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the source guest is %q, not running again", st)
		case <-time.After(20 * time.Millisecond):
		}
	}
	var ms []api.Migration
	if err := dst.SgctlJSON(ctx, &ms, "migrations"); err != nil {
		t.Fatal(err)
	}
	if m := ms[len(ms)-1]; m.Guest == nil || m.Guest.State != api.GuestFailed || !strings.Contains(m.Guest.Error, "aborted") {
		t.Fatalf("when the source resumed its guest, the destination's was not stopped: %+v", m.Guest)
	}
	for syscall.Kill(destPID, 0) == nil {
		select {
		case <-ctx.Done():
			t.Fatalf("the destination's QEMU (pid %d) still runs", destPID)
		case <-time.After(50 * time.Millisecond):
		}
	}

	// The source's guest runs on, from where it was paused.
	select {
	case err := <-srcExited:
		t.Fatalf("the source's QEMU exited: %v", err)
	default:
	}
	lines := guestLines(serial)
	last := lines[len(lines)-1]
	next, err := waitGuestLine(ctx, serial, func(l guestLineAt) bool { return l.n >= last.n+2 })
	if err != nil {
		t.Fatal(err)
	}
	if next.mem != g.sum || next.disk != g.sum {
		t.Fatalf("at the source after the abort: %+v, want %s", next, g.sum)
	}
	t.Logf("eviction aborted with the guest running at dst (pid %d, stopped there); the source guest went on from n=%d to n=%d", destPID, last.n, next.n)
}

// fakeQMPEnv makes this test binary, exec'd under any argv, a QMP
// responder on the socket it names: a guest whose command line is
// whatever a test chooses, as `vm add` reads it from /proc.
const fakeQMPEnv = "SG_E2E_FAKE_QMP"

func init() {
	if sock := os.Getenv(fakeQMPEnv); sock != "" {
		serveFakeQMP(sock)
		os.Exit(0)
	}
}

// serveFakeQMP answers every QMP command with success until killed.
func serveFakeQMP(sock string) {
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		go func() { // one per monitor connection; ends with it
			defer c.Close()
			c.Write([]byte(`{"QMP": {"version": {}, "capabilities": []}}` + "\n"))
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				if strings.Contains(sc.Text(), "query-status") {
					c.Write([]byte(`{"return": {"status": "running", "running": true}}` + "\n"))
					continue
				}
				c.Write([]byte(`{"return": {}}` + "\n"))
			}
		}()
	}
}

// startFakeGuest runs the QMP responder under argv and returns its socket.
func startFakeGuest(t *testing.T, argv []string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	cmd := &exec.Cmd{Path: self, Args: argv, Env: append(os.Environ(), fakeQMPEnv+"="+sock)}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		select {
		case <-t.Context().Done():
			t.Fatal("the fake guest did not listen")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestQEMUHostileGuestRefusedAtVMAdd registers guests whose command lines
// would make a destination run a program or touch host files: `sgctl vm
// add` refuses each with a message naming the program or option, and
// nothing is registered or executed.
func TestQEMUHostileGuestRefusedAtVMAdd(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c := startCluster(t, "src")
	src := c.Nodes[0]
	outside := t.TempDir()
	marker := filepath.Join(outside, "marker")
	mem := createFile(t, filepath.Join(t.TempDir(), "mem"))
	if err := os.Truncate(mem, 1<<20); err != nil {
		t.Fatal(err)
	}
	base := []string{"qemu-system-x86_64", "-nodefaults", "-machine", "q35,memory-backend=mem", "-m", "1M",
		"-object", "memory-backend-file,id=mem,size=1M,mem-path=" + mem + ",share=on"}
	for name, tc := range map[string]struct {
		argv []string
		want string
	}{
		"bash":               {[]string{"bash", "-c", "touch " + marker}, `program "bash"`},
		"parallel":           {append(slices.Clone(base), "-parallel", "file:"+marker), "-parallel"},
		"drive filename":     {append(slices.Clone(base), "-drive", "driver=raw,file.filename=/etc/shadow"), "-drive"},
		"fw_cfg":             {append(slices.Clone(base), "-fw_cfg", "name=x,file="+marker), "-fw_cfg"},
		"loader":             {append(slices.Clone(base), "-device", "loader,file="+marker), "-device loader"},
		"virtfs":             {append(slices.Clone(base), "-virtfs", "local,path=/,mount_tag=r,security_model=none"), "-virtfs"},
		"plugin":             {append(slices.Clone(base), "-plugin", marker), "-plugin"},
		"hostfwd":            {append(slices.Clone(base), "-netdev", "user,id=n,hostfwd=tcp::2222-:22"), `"hostfwd"`},
		"duplicate mem-path": {append(slices.Clone(base[:7]), "memory-backend-file,id=mem,size=1M,mem-path="+mem+",share=on,mem-path="+marker), `"mem-path" given twice`},
	} {
		t.Run(name, func(t *testing.T) {
			qmp := startFakeGuest(t, tc.argv)
			out, err := src.Sgctl(ctx, "vm", "add", "g1", "--qemu-qmp", qmp)
			if err == nil {
				t.Fatalf("vm add accepted %q: %s", tc.argv, out)
			}
			if msg := err.Error() + string(out); !strings.Contains(msg, tc.want) {
				t.Fatalf("vm add refused %q without naming %s: %s", tc.argv, tc.want, msg)
			}
			t.Logf("refused: %v", err)
		})
	}
	var vms []api.VM
	if err := src.SgctlJSON(ctx, &vms, "vm", "list"); err != nil {
		t.Fatal(err)
	}
	if len(vms) != 0 {
		t.Fatalf("hostile guests registered: %+v", vms)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("files created outside the data directory: %v", ents)
	}
}

// TestQEMUHostileDescriptionRefusedAtDestination plays a modified source:
// an in-process sgnode (the project's daemon and eviction packages) that
// evicts "guests" whose config region carries what vm add would refuse
// (a raw command line running bash, keys naming host files, a duplicated
// key, an architecture that is a path) to a real destination sgnode. The
// destination refuses each guest with a message naming it, starts no
// QEMU, runs nothing and creates no file outside its data directory.
func TestQEMUHostileDescriptionRefusedAtDestination(t *testing.T) {
	testenv.Need(t, "lazy FUSE views", fuseview.Available())
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	c := startCluster(t, "dst", "evil")
	dst, evil := c.Nodes[0], c.Nodes[1]
	killGuestsAtCleanup(t, dst)
	if err := evil.Stop(); err != nil {
		t.Fatal(err)
	}
	src := startInProcessNode(t, ctx, evil, c.PeersFile, dst.PeerID)

	outside := t.TempDir()
	marker := filepath.Join(outside, "marker")
	guest := func(extra string) string {
		return `{"arch":"x86_64","machine":[{"k":"type","v":"q35"},{"k":"memory-backend","v":"mem"}],"mem_size":1048576,` +
			`"memory":[{"id":"mem","size":1048576` + extra
	}
	configs := map[string]struct {
		config, want string
	}{
		// A raw command line that a destination once ran: bash, told to
		// touch the marker (the rest only gets it past the old parser).
		"evil-bash": {`{"vm":"evil-bash","args":["bash","-c","touch ` + marker + `","-object","memory-backend-file,id=mem,size=1M,mem-path=/m,share=on"]}`,
			`unknown field "args"`},
		"evil-loader":   {`{"vm":"evil-loader","guest":` + guest(`}],"devices":[[{"k":"driver","v":"loader"},{"k":"file","v":"`+marker+`"}]]}}`), "-device loader"},
		"evil-filename": {`{"vm":"evil-filename","guest":` + guest(`}],"drives":[{"props":[{"k":"file.filename","v":"/etc/shadow"}]}]}}`), `"file.filename"`},
		"evil-mempath":  {`{"vm":"evil-mempath","guest":` + guest(`,"props":[{"k":"mem-path","v":"`+marker+`"}]}]}}`), `"mem-path"`},
		"evil-dupkey":   {`{"vm":"evil-dupkey","guest":` + guest(`,"props":[{"k":"prealloc","v":"on"},{"k":"prealloc","v":"off"}]}]}}`), `"prealloc" given twice`},
		"evil-hostfwd":  {`{"vm":"evil-hostfwd","guest":` + guest(`}],"netdevs":[[{"k":"type","v":"user"},{"k":"hostfwd","v":"tcp::2222-:22"}]]}}`), `"hostfwd"`},
		"evil-dumpdtb":  {`{"vm":"evil-dumpdtb","guest":` + strings.Replace(guest(`}]}}`), `"v":"q35"}`, `"v":"q35"},{"k":"dumpdtb","v":"`+marker+`"}`, 1), `"dumpdtb"`},
		"evil-arch":     {`{"vm":"evil-arch","guest":` + strings.Replace(guest(`}]}}`), `"x86_64"`, `"../../../../bin/sh"`, 1), `architecture "../../../../bin/sh"`},
	}
	var vms []eviction.VM
	for name, tc := range configs {
		vms = append(vms, eviction.VM{Name: name, Regions: []eviction.Region{
			{Name: qemu.ConfigRegion, Kind: manifest.KindFile, Size: int64(len(tc.config)), ChunkSize: 64 << 10, Data: strings.NewReader(tc.config)},
			{Name: qemu.StateRegion, Kind: manifest.KindState, Size: 4096, ChunkSize: 64 << 10, Data: bytes.NewReader(bytes.Repeat([]byte("s"), 4096))},
			{Name: "mem", Kind: manifest.KindMemory, Size: 1 << 20, ChunkSize: 4096, Data: bytes.NewReader(bytes.Repeat([]byte("m"), 1<<20))},
		}})
	}
	cfg := eviction.DefaultConfig(dst.PeerID)
	cfg.Direct = true
	e, err := eviction.New(cluster.NewNet(src.Node()), vms, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Run(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for name, tc := range configs {
		_, err := waitGuest(ctx, dst, name)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: the destination did not refuse it naming %s: %v", name, tc.want, err)
			continue
		}
		t.Logf("%s refused: %v", name, err)
	}
	// Nothing ran: no QEMU started for any of them, no marker, no file
	// outside the data directory.
	if pids, _ := filepath.Glob(filepath.Join(dst.Dir, "guests", "*", "qemu.pid")); len(pids) != 0 {
		t.Errorf("QEMU started for a refused guest: %v", pids)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("files created outside the data directory: %v", ents)
	}
	// The destination stays up and answers.
	if _, err := dst.Sgctl(ctx, "status"); err != nil {
		t.Fatalf("destination down after the hostile guests: %v", err)
	}
}

// startInProcessNode runs sgnode's daemon in this process on n's data
// directory and address (n's own process stopped), and waits until it is
// connected to peer.
func startInProcessNode(t *testing.T, ctx context.Context, n *lab.Node, peersFile, peerID string) *daemon.Daemon {
	t.Helper()
	cfg := daemon.DefaultConfig(n.Dir)
	listen, _, _ := strings.Cut(n.Addr, "/p2p/")
	cfg.Node.Listen = []string{listen}
	peers, err := node.ReadPeersFile(peersFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Node.Peers = peers
	cfg.Store.MemoryBudget = 512 << 20
	d, err := daemon.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- d.Run(runCtx) }() // stopped at cleanup
	t.Cleanup(func() { stop(); <-ran })
	for {
		for _, p := range d.Node().Peers() {
			if p.ID.String() == peerID && p.Connected {
				return d
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("in-process node not connected to %s", peerID)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
