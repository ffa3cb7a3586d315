package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/fetch/fuseview"
	"github.com/sgrelay/sg/internal/lab"
	"github.com/sgrelay/sg/internal/testenv"
	"github.com/sgrelay/sg/internal/workload"
)

// Soak tolerances. Mounts, descriptors and goroutines go back to their
// baseline exactly but for the slack below (a libp2p stream or a QUIC
// timer that happens to be live at the reading); the Go runtime keeps the
// threads it once started; RSS keeps what the Go heap has not returned.
const (
	soakFDSlack        = 4
	soakGoroutineSlack = 20
	soakThreadSlack    = 8
	soakRSSSlack       = 96 << 20
	// soakMemBudget is each node's memory tier; soakOverhead is what a
	// destination's RSS may exceed it by: the Go runtime and libp2p (about
	// 60 MiB measured at rest) plus a few migrations' per-position state
	// and buffers (kilobytes per position).
	soakMemBudget = 128 << 20
	soakOverhead  = 160 << 20
)

// soakVM is a 16 MiB VM: 12 MiB memory, 4 MiB disk, of base 42.
func soakVM(seed uint64) workload.Spec {
	s := vmSpec(seed)
	s.MemSize, s.DiskSize = 12<<20, 4<<20
	return s
}

// procStats is what one sgnode process holds, read from /proc, its data
// directory and its metrics.
type procStats struct {
	FDs, Threads, Goroutines, Mounts int
	RSS, StoreBytes, DiskBytes       int64
	OpenMigrations, Views            int
}

func (s procStats) String() string {
	return fmt.Sprintf("fds %d, threads %d, goroutines %d, FUSE mounts %d, RSS %.1f MiB, store %.1f MiB, data dir %.1f MiB, open migrations %d, views %d",
		s.FDs, s.Threads, s.Goroutines, s.Mounts, mib(s.RSS), mib(s.StoreBytes), mib(s.DiskBytes), s.OpenMigrations, s.Views)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func readStats(t *testing.T, ctx context.Context, n *lab.Node) procStats {
	t.Helper()
	pid := n.PID()
	var s procStats
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	s.FDs = len(fds)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "Threads:":
			s.Threads, _ = strconv.Atoi(f[1])
		case len(f) >= 2 && f[0] == "VmRSS:":
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			s.RSS = kb << 10
		}
	}
	s.Mounts = fuseMountsUnder(t, pid, n.Dir)
	metric := func(name string) float64 {
		v, err := n.Metric(ctx, name)
		if err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		return v
	}
	s.Goroutines = int(metric("go_goroutines"))
	s.StoreBytes = int64(metric("sg_chunkstore_used_bytes"))
	s.OpenMigrations = int(metric("sg_node_open_migrations"))
	s.Views = int(metric("sg_lazy_views_mounted"))
	s.DiskBytes = du(t, n.Dir)
	return s
}

// fuseMountsUnder counts the FUSE mounts below dir in pid's mount table.
func fuseMountsUnder(t *testing.T, pid int, dir string) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	prefix := filepath.Clean(dir) + "/"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, x := range fields {
			if x == "-" && i+1 < len(fields) && strings.HasPrefix(fields[i+1], "fuse") &&
				len(fields) > 4 && strings.HasPrefix(fields[4], prefix) {
				n++
			}
		}
	}
	return n
}

// du is the disk space of the files under dir (not crossing into mounts).
func du(t *testing.T, dir string) int64 {
	t.Helper()
	var root syscall.Stat_t
	if err := syscall.Stat(dir, &root); err != nil {
		t.Fatal(err)
	}
	var total int64
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a view unmounted or a socket removed meanwhile
		}
		var st syscall.Stat_t
		if syscall.Lstat(p, &st) != nil {
			return nil
		}
		if d.IsDir() && st.Dev != root.Dev {
			return fs.SkipDir
		}
		total += st.Blocks * 512
		return nil
	})
	return total
}

// TestSoak evicts 16 MiB VMs in a row between two nodes through a relay,
// in both directions; some are aborted midway (the client gives up) and
// some abandoned (a third node, their source, is killed and restarted).
// Every gathered VM is checked byte for byte and then deleted, as an
// operator would. Afterwards the two nodes and the relay are back at
// their baselines: no FUSE mount, descriptor, thread or goroutine is left
// per migration, RSS is within soakRSSSlack, no store holds a migration's
// chunks (the destinations' gathered ones, the relay's released ones), and `sgctl migrations` holds at most
// --migration-records ended records. SG_SOAK=N runs N evictions (default
// 30).
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes")
	}
	testenv.Need(t, "FUSE", fuseview.Available())
	rounds := 30
	if v := os.Getenv("SG_SOAK"); v != "" {
		var err error
		if rounds, err = strconv.Atoi(v); err != nil || rounds < 10 {
			t.Fatalf("SG_SOAK=%q: want a number of evictions, at least 10", v)
		}
	}
	const records = 8
	budget := fmt.Sprint(soakMemBudget>>20, "MiB")
	flags := map[string][]string{}
	for _, n := range []string{"a", "b", "r1", "c"} {
		flags[n] = []string{"--mem-budget", budget, "--migration-records", fmt.Sprint(records)}
	}
	c := startClusterWith(t, flags, "a", "b", "r1", "c")
	a, b, relay, killable := c.Nodes[0], c.Nodes[1], c.Nodes[2], c.Nodes[3]
	ctx, cancel := context.WithTimeout(t.Context(), time.Duration(rounds)*20*time.Second+2*time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))

	images := map[*lab.Node][]string{}
	for i, n := range []*lab.Node{a, b, killable} {
		dir := t.TempDir()
		mem, disk := filepath.Join(dir, "vm.mem"), filepath.Join(dir, "vm.disk")
		if err := soakVM(uint64(100+i)).WriteFiles(mem, disk); err != nil {
			t.Fatal(err)
		}
		images[n] = []string{mem, disk}
	}
	seq := 0
	// add registers a new VM of from's images; forget removes it once evicted.
	add := func(from *lab.Node) string {
		seq++
		name := fmt.Sprintf("s%d", seq)
		if _, err := from.Sgctl(ctx, "vm", "add", name, "--mem", images[from][0], "--disk", images[from][1]); err != nil {
			t.Fatal(err)
		}
		return name
	}
	forget := func(from *lab.Node, name string) {
		if _, err := from.Sgctl(ctx, "vm", "rm", name); err != nil {
			t.Fatal(err)
		}
	}
	evictVM := func(ctx context.Context, from, to *lab.Node, name string, extra ...string) error {
		_, err := from.Sgctl(ctx, append([]string{"evict", "vm", name, "--to", to.PeerID, "--via", relay.PeerID}, extra...)...)
		return err
	}
	evict := func(ctx context.Context, from, to *lab.Node, extra ...string) (string, error) {
		name := add(from)
		err := evictVM(ctx, from, to, name, extra...)
		forget(from, name)
		return name, err
	}
	// gathered checks a VM gathered at dst byte for byte, then deletes it.
	gathered := func(from, dst *lab.Node, name string) {
		m := waitGathered(t, ctx, dst, name)
		sameFiles(t, m.Gather.Files, images[from])
		if err := os.RemoveAll(filepath.Dir(m.Gather.Files[0])); err != nil {
			t.Fatal(err)
		}
	}
	// settled waits until no migration is open at n (every ended one retired).
	settled := func(n *lab.Node) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			open, err := n.Metric(ctx, "sg_node_open_migrations")
			views, verr := n.Metric(ctx, "sg_lazy_views_mounted")
			if err == nil && verr == nil && open == 0 && views == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v migrations open, %v views mounted 30 s after the last ended", n.Name, open, views)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// Warm up: one round trip, so that connections, pools and the
	// runtime's threads exist before the baseline is read.
	for _, d := range [][2]*lab.Node{{a, b}, {b, a}} {
		name, err := evict(ctx, d[0], d[1])
		if err != nil {
			t.Fatal(err)
		}
		gathered(d[0], d[1], name)
	}
	watched := []*lab.Node{a, b, relay}
	for _, n := range watched {
		settled(n)
	}
	time.Sleep(time.Second)
	base := map[*lab.Node]procStats{}
	for _, n := range watched {
		base[n] = readStats(t, ctx, n)
		t.Logf("baseline %s: %v", n.Name, base[n])
	}

	var done, aborted, abandoned int
	var peakRSS int64
	start := time.Now()
	for i := range rounds {
		from, to := a, b
		if i%2 == 1 {
			from, to = b, a
		}
		switch i % 10 {
		case 4: // aborted: the client gives up midway (sgctl killed)
			actx, acancel := context.WithTimeout(ctx, time.Duration(100+rng.IntN(300))*time.Millisecond)
			_, err := evict(actx, from, to, "--max-rate", "40Mbit")
			acancel()
			if err == nil {
				t.Fatalf("round %d: an eviction capped at 40 Mbit/s finished before its abort", i)
			}
			aborted++
		case 8: // abandoned: its source dies midway, and comes back
			name := add(killable)
			done := make(chan error, 1)
			go func() { done <- evictVM(ctx, killable, to, name, "--max-rate", "40Mbit") }()
			time.Sleep(time.Duration(200+rng.IntN(600)) * time.Millisecond)
			if err := killable.Kill(); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err == nil {
				t.Fatalf("round %d: an eviction capped at 40 Mbit/s finished before its source was killed", i)
			}
			if err := killable.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			if err := c.WaitConnected(ctx, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			forget(killable, name)
			abandoned++
		default:
			name, err := evict(ctx, from, to)
			if err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
			gathered(from, to, name)
			done++
		}
		for _, n := range []*lab.Node{a, b} {
			if s := readStats(t, ctx, n); s.RSS > peakRSS {
				peakRSS = s.RSS
			}
		}
	}
	took := time.Since(start)
	for _, n := range watched {
		settled(n)
	}

	// Back at the baseline (read again for a while: a stream or timer
	// may be live at one reading).
	for _, n := range watched {
		var s procStats
		var why string
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			s = readStats(t, ctx, n)
			why = overBaseline(base[n], s)
			if why == "" || time.Now().After(deadline) {
				break
			}
		}
		t.Logf("after %s: %v", n.Name, s)
		if why != "" {
			t.Errorf("%s after %d evictions is not back at its baseline: %s\nbaseline: %v\nafter:    %v", n.Name, rounds, why, base[n], s)
		}
	}
	if limit := int64(soakMemBudget + soakOverhead); peakRSS > limit {
		t.Errorf("a destination's RSS reached %.1f MiB: over its memory budget + overhead (%.0f MiB)", mib(peakRSS), mib(limit))
	}
	// The records are bounded, and prunable.
	for _, n := range []*lab.Node{a, b} {
		var ms []api.Migration
		if err := n.SgctlJSON(ctx, &ms, "migrations"); err != nil {
			t.Fatal(err)
		}
		if len(ms) > records {
			t.Errorf("%s lists %d migrations after %d evictions: more than migration_records = %d", n.Name, len(ms), rounds, records)
		}
		for _, m := range ms {
			if m.Role == "destination" && !m.Retired {
				t.Errorf("%s: migration %s (%s) is not retired", n.Name, m.ID[:12], m.State)
			}
		}
		if _, err := n.Sgctl(ctx, "migrations", "rm", ms[0].ID[:12]); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Sgctl(ctx, "migrations", "prune"); err != nil {
			t.Fatal(err)
		}
		if err := n.SgctlJSON(ctx, &ms, "migrations"); err != nil || len(ms) != 0 {
			t.Fatalf("%s after prune: %d records, %v", n.Name, len(ms), err)
		}
	}
	t.Logf("%d evictions of 16 MiB in %v: %d gathered and checked, %d aborted, %d abandoned; peak destination RSS %.1f MiB (budget %d MiB)",
		rounds, took.Round(time.Millisecond), done, aborted, abandoned, mib(peakRSS), soakMemBudget>>20)
}

// overBaseline says what of s exceeds base beyond the soak's tolerances
// ("" if nothing). The relay is held to the same store bound as the
// destinations: a complete migration is released by its destination, and
// an aborted or abandoned one too, when the destination gives it up.
func overBaseline(base, s procStats) string {
	var why []string
	if s.Mounts > base.Mounts {
		why = append(why, fmt.Sprintf("%d FUSE mounts, baseline %d", s.Mounts, base.Mounts))
	}
	if s.FDs > base.FDs+soakFDSlack {
		why = append(why, fmt.Sprintf("%d descriptors, baseline %d (+%d)", s.FDs, base.FDs, soakFDSlack))
	}
	if s.Goroutines > base.Goroutines+soakGoroutineSlack {
		why = append(why, fmt.Sprintf("%d goroutines, baseline %d (+%d)", s.Goroutines, base.Goroutines, soakGoroutineSlack))
	}
	if s.Threads > base.Threads+soakThreadSlack {
		why = append(why, fmt.Sprintf("%d threads, baseline %d (+%d)", s.Threads, base.Threads, soakThreadSlack))
	}
	if s.RSS > base.RSS+soakRSSSlack {
		why = append(why, fmt.Sprintf("RSS %.1f MiB, baseline %.1f MiB (+%d MiB)", mib(s.RSS), mib(base.RSS), soakRSSSlack>>20))
	}
	if s.OpenMigrations != 0 || s.Views != 0 {
		why = append(why, fmt.Sprintf("%d migrations open, %d views mounted", s.OpenMigrations, s.Views))
	}
	if s.StoreBytes > base.StoreBytes+1<<20 {
		why = append(why, fmt.Sprintf("store %.1f MiB, baseline %.1f MiB", mib(s.StoreBytes), mib(base.StoreBytes)))
	}
	if s.DiskBytes > base.DiskBytes+1<<20 {
		why = append(why, fmt.Sprintf("data dir %.1f MiB, baseline %.1f MiB", mib(s.DiskBytes), mib(base.DiskBytes)))
	}
	return strings.Join(why, "; ")
}

// A view in use stays mounted until it is not: after the gather is
// complete, a reader holding the FUSE file open keeps the view mounted
// (and reading the right bytes), then an NBD client keeps the disk's
// export; once both let go the migration is retired: the view unmounted,
// the export closed, one record left.
func TestSoakViewInUseStaysMounted(t *testing.T) {
	testenv.Need(t, "FUSE", fuseview.Available())
	c := startCluster(t, "src", "dst", "r1")
	src, dst := c.Nodes[0], c.Nodes[1]
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	images := addVM(t, ctx, src, "held", soakVM(200))
	want, err := os.ReadFile(images[0])
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := src.Sgctl(ctx, "evict", "vm", "held", "--to", dst.PeerID, "--max-rate", "80Mbit")
		done <- err
	}()
	lazy := lazyDir(t, ctx, dst, "held")
	f, err := os.Open(filepath.Join(lazy, "mem"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var sock string
	for deadline := time.Now().Add(10 * time.Second); sock == ""; time.Sleep(20 * time.Millisecond) {
		var ms []api.Migration
		if err := dst.SgctlJSON(ctx, &ms, "migrations"); err == nil && len(ms) > 0 && ms[0].Gather != nil {
			sock = ms[0].Gather.NBD["disk0"]
		}
		if time.Now().After(deadline) {
			t.Fatal("no NBD export of disk0")
		}
	}
	nbd, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer nbd.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	m := waitGathered(t, ctx, dst, "held")
	sameFiles(t, m.Gather.Files, images)

	mounted := func() (views float64, mounts int) {
		v, err := dst.Metric(ctx, "sg_lazy_views_mounted")
		if err != nil {
			t.Fatal(err)
		}
		return v, fuseMountsUnder(t, dst.PID(), dst.Dir)
	}
	// Complete, but held: it stays (well past the retire poll).
	for range 10 {
		time.Sleep(200 * time.Millisecond)
		if v, n := mounted(); v != 1 || n != 1 {
			t.Fatalf("a view held open was taken down: %v views, %d FUSE mounts", v, n)
		}
		buf := make([]byte, 4096)
		if _, err := f.ReadAt(buf, 1<<20); err != nil || string(buf) != string(want[1<<20:1<<20+4096]) {
			t.Fatalf("reading the held view after the gather: %v", err)
		}
	}
	f.Close()
	// The NBD client still holds the export: still not retired.
	time.Sleep(time.Second)
	if v, _ := mounted(); v != 1 {
		t.Fatalf("retired while an NBD client is connected: %v views", v)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the NBD socket went while a client is connected: %v", err)
	}
	nbd.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, n := mounted()
		var ms []api.Migration
		if err := dst.SgctlJSON(ctx, &ms, "migrations"); err != nil {
			t.Fatal(err)
		}
		if v == 0 && n == 0 && len(ms) == 1 && ms[0].Retired {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after its last user let go: %v views, %d FUSE mounts, records %+v", v, n, ms)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("the NBD socket of a retired migration: %v", err)
	}
	if _, err := os.Stat(lazy); !os.IsNotExist(err) {
		t.Fatalf("the view's mount point of a retired migration: %v", err)
	}
	sameFiles(t, m.Gather.Files, images) // the files stay, whole
}
