package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/cli"
	"github.com/sgrelay/sg/internal/lab"
	"github.com/sgrelay/sg/internal/rawquic"
	"github.com/sgrelay/sg/internal/units"
	"github.com/sgrelay/sg/internal/workload"
)

// rawquicServe is the hidden subcommand that runs the raw quic-go sink in
// a process of its own, so the baseline crosses processes as sg does.
const rawquicServe = "rawquic-serve"

// Transfer is one way of moving bytes between two processes on loopback.
type Transfer struct {
	MBps      float64 `json:"mb_per_s"`      // payload megabytes per second
	CPUPerGiB float64 `json:"cpu_s_per_gib"` // CPU seconds (both processes) per GiB of payload
	// FaultsPerMiB is minor page faults (both processes) per MiB moved:
	// 256 means every 4 KiB page of payload landed in fresh memory.
	FaultsPerMiB float64 `json:"minor_faults_per_mib"`
}

// BenchReport is what `sglab bench` measured, in one run.
type BenchReport struct {
	When      time.Time `json:"when"`
	CPUs      int       `json:"cpus"`
	GoVersion string    `json:"go_version"`
	Size      int64     `json:"size_bytes"`

	HashMBps        float64 `json:"hash_mb_per_s"`           // SHA-256 of 4 KiB chunks, one core
	HashAllMBps     float64 `json:"hash_all_cores_mb_per_s"` // on every core
	MemoryStoreMBps float64 `json:"memory_store_mb_per_s"`   // chunkstore memory tier Put, 4 KiB
	DiskStoreMBps   float64 `json:"disk_store_mb_per_s"`     // chunkstore disk tier Put + Sync, 4 KiB

	RawQUIC  Transfer `json:"raw_quic"`
	Put      Transfer `json:"sgctl_put"` // sgctl put of a file to one peer
	Evict    Transfer `json:"evict"`     // sgctl evict --direct of a VM with no zero or repeated page
	PutRatio float64  `json:"put_over_raw"`
	EvictRat float64  `json:"evict_over_raw"`
}

func newBenchCmd(out io.Writer) *cobra.Command {
	var (
		size                   cli.Size
		jsonPath, bin, profile string
	)
	c := &cobra.Command{
		Use:   "bench",
		Short: "Measure hashing, the store, raw QUIC, sgctl put and an eviction between two sgnodes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return bench(cmd.Context(), out, size.V, jsonPath, bin, profile)
		},
	}
	fl := c.Flags()
	cli.SizeVar(fl, &size, "size", 512<<20, 16<<20, 64<<30, "bytes moved by each transfer")
	fl.StringVar(&jsonPath, "json", "", "also write the report as JSON to this `file`")
	fl.StringVar(&bin, "bin", "", "`dir`ectory with sgnode and sgctl (default: next to sglab)")
	fl.StringVar(&profile, "profile", "", "write 5 s CPU profiles of both sgnodes during the eviction to this `dir`ectory")
	return c
}

func bench(ctx context.Context, out io.Writer, size int64, jsonPath, bin, profile string) error {
	var err error
	size = size / 65536 * 65536
	if bin, err = binDir(bin); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "sglab-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	r := BenchReport{When: time.Now().UTC(), CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Size: size}

	fmt.Fprintln(out, "hashing and storing…")
	r.HashMBps, r.HashAllMBps = hashRates(min(size, 256<<20))
	if r.MemoryStoreMBps, r.DiskStoreMBps, err = storeRates(min(size, 256<<20), dir); err != nil {
		return err
	}
	fmt.Fprintln(out, "raw quic-go between two processes…")
	if r.RawQUIC, err = rawQUIC(ctx, size); err != nil {
		return err
	}
	fmt.Fprintln(out, "sgctl put and eviction between two sgnode processes…")
	if r.Put, r.Evict, err = sgTransfers(ctx, bin, dir, size, profile); err != nil {
		return err
	}
	r.PutRatio, r.EvictRat = r.Put.MBps/r.RawQUIC.MBps, r.Evict.MBps/r.RawQUIC.MBps

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(out, "\n%d CPUs, %s, %s per transfer, loopback\n", r.CPUs, r.GoVersion, units.FormatSize(size))
	fmt.Fprintln(tw, "\tMB/s\tCPU s/GiB\tfaults/MiB\tvs raw QUIC\t")
	fmt.Fprintf(tw, "raw quic-go\t%.1f\t%.2f\t%.0f\t1.00\t\n", r.RawQUIC.MBps, r.RawQUIC.CPUPerGiB, r.RawQUIC.FaultsPerMiB)
	fmt.Fprintf(tw, "sgctl put\t%.1f\t%.2f\t%.0f\t%.2f\t\n", r.Put.MBps, r.Put.CPUPerGiB, r.Put.FaultsPerMiB, r.PutRatio)
	fmt.Fprintf(tw, "evict --direct\t%.1f\t%.2f\t%.0f\t%.2f\t\n", r.Evict.MBps, r.Evict.CPUPerGiB, r.Evict.FaultsPerMiB, r.EvictRat)
	fmt.Fprintf(tw, "SHA-256, 1 core\t%.1f\t\t\t\t\n", r.HashMBps)
	fmt.Fprintf(tw, "SHA-256, %d cores\t%.1f\t\t\t\t\n", r.CPUs, r.HashAllMBps)
	fmt.Fprintf(tw, "store, memory tier\t%.1f\t\t\t\t\n", r.MemoryStoreMBps)
	fmt.Fprintf(tw, "store, disk tier\t%.1f\t\t\t\t\n", r.DiskStoreMBps)
	tw.Flush()
	if jsonPath != "" {
		b, _ := json.MarshalIndent(r, "", "  ")
		if err := os.WriteFile(jsonPath, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// hashRates hashes n bytes as 4 KiB chunks on one core, then on all.
func hashRates(n int64) (one, all float64) {
	buf := make([]byte, n)
	for i := range buf {
		buf[i] = byte(i*7 + i>>12)
	}
	start := time.Now()
	for o := 0; o+4096 <= len(buf); o += 4096 {
		chunk.Sum(buf[o : o+4096])
	}
	one = float64(n) / time.Since(start).Seconds() / 1e6
	workers := runtime.GOMAXPROCS(0)
	per := len(buf) / workers / 4096 * 4096
	var wg sync.WaitGroup
	start = time.Now()
	for w := range workers {
		wg.Go(func() {
			for o := w * per; o+4096 <= (w+1)*per; o += 4096 {
				chunk.Sum(buf[o : o+4096])
			}
		})
	}
	wg.Wait()
	all = float64(per*workers) / time.Since(start).Seconds() / 1e6
	return one, all
}

// storeRates puts n bytes of distinct 4 KiB chunks into each tier.
func storeRates(n int64, dir string) (mem, disk float64, err error) {
	chunks := make([][]byte, n/4096)
	ids := make([]chunk.ID, len(chunks))
	for i := range chunks {
		chunks[i] = make([]byte, 4096)
		copy(chunks[i], strconv.Itoa(i))
		chunks[i][4095] = 1
		ids[i] = chunk.Sum(chunks[i])
	}
	m := chunkstore.NewMemory(n * 2)
	start := time.Now()
	for i, c := range chunks {
		if err := m.Put(ids[i], c); err != nil {
			return 0, 0, err
		}
	}
	mem = float64(n) / time.Since(start).Seconds() / 1e6
	d, err := chunkstore.OpenDisk(chunkstore.DiskConfig{Dir: filepath.Join(dir, "disk"), Budget: n * 2})
	if err != nil {
		return 0, 0, err
	}
	defer d.Close()
	start = time.Now()
	for i, c := range chunks {
		if err := d.Put(ids[i], c); err != nil {
			return 0, 0, err
		}
	}
	if err := d.Sync(); err != nil {
		return 0, 0, err
	}
	disk = float64(n) / time.Since(start).Seconds() / 1e6
	return mem, disk, nil
}

// serveRawQUIC is the child: it prints its address and serves until its
// standard input closes (the parent is done or gone).
func serveRawQUIC(ctx context.Context, out io.Writer) error {
	srv, err := rawquic.Listen("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // ends with the process
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	fmt.Fprintln(out, srv.Addr())
	go srv.Serve(ctx) // ends when srv closes
	<-ctx.Done()
	return nil
}

// rawQUIC sends size bytes to a sink in another process over quic-go with
// libp2p's windows, two streams (as sg pushes on several).
func rawQUIC(ctx context.Context, size int64) (Transfer, error) {
	exe, err := os.Executable()
	if err != nil {
		return Transfer{}, err
	}
	cmd := exec.CommandContext(ctx, exe, rawquicServe)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return Transfer{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return Transfer{}, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return Transfer{}, err
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return Transfer{}, fmt.Errorf("raw QUIC sink: %w", err)
	}
	_, f0 := procStat(os.Getpid())
	_, g0 := procStat(cmd.Process.Pid)
	before := cpuSelf() + cpuOf(cmd.Process.Pid)
	d, err := rawquic.Send(ctx, strings.TrimSpace(addr), size, 2)
	if err != nil {
		return Transfer{}, err
	}
	cpu := cpuSelf() + cpuOf(cmd.Process.Pid) - before
	_, f1 := procStat(os.Getpid())
	_, g1 := procStat(cmd.Process.Pid)
	return Transfer{MBps: float64(size) / d.Seconds() / 1e6, CPUPerGiB: cpu / (float64(size) / (1 << 30)),
		FaultsPerMiB: float64(f1-f0+g1-g0) / (float64(size) / (1 << 20))}, nil
}

// sgTransfers puts a file and evicts a VM from one sgnode to another.
func sgTransfers(ctx context.Context, bin, dir string, size int64, profileDir string) (put, evict Transfer, err error) {
	cfg := lab.Config{Bin: bin, Dir: filepath.Join(dir, "lab"), Names: []string{"source", "destination"},
		MemBudget: units.FormatSize(3 * size), Flags: map[string][]string{}}
	debugAddr := map[string]string{}
	if profileDir != "" {
		for _, n := range cfg.Names {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return put, evict, err
			}
			debugAddr[n] = ln.Addr().String()
			ln.Close()
			cfg.Flags[n] = []string{"--metrics", debugAddr[n], "--pprof"}
		}
	}
	c, err := lab.Start(ctx, cfg)
	if err != nil {
		return put, evict, err
	}
	defer c.Stop()
	if err := c.WaitConnected(ctx, 30*time.Second); err != nil {
		return put, evict, err
	}
	src, dst := c.Nodes[0], c.Nodes[1]
	cpu := func() float64 { return cpuOf(src.PID()) + cpuOf(dst.PID()) }
	faults := func() int64 {
		_, a := procStat(src.PID())
		_, b := procStat(dst.PID())
		return a + b
	}

	// Every page distinct and non-zero: every byte crosses.
	spec := workload.Spec{Seed: 7, BaseSeed: 7, MemSize: size, PageSize: 4096}
	file := filepath.Join(dir, "payload")
	if err := spec.WriteFiles(file, ""); err != nil {
		return put, evict, err
	}
	before, f0 := cpu(), faults()
	var pr api.PutResult
	if err := src.SgctlJSON(ctx, &pr, "put", file, "--chunk-size", "4KiB"); err != nil {
		return put, evict, err
	}
	put = Transfer{MBps: float64(pr.UniqueBytes) / pr.Duration.Seconds() / 1e6, CPUPerGiB: (cpu() - before) / (float64(pr.UniqueBytes) / (1 << 30)),
		FaultsPerMiB: float64(faults()-f0) / (float64(pr.UniqueBytes) / (1 << 20))}

	spec.Seed, spec.BaseSeed = 8, 8 // nothing in common with the put
	vmFile := filepath.Join(dir, "vm.mem")
	if err := spec.WriteFiles(vmFile, ""); err != nil {
		return put, evict, err
	}
	if _, err := src.Sgctl(ctx, "vm", "add", "bench", "--mem", vmFile); err != nil {
		return put, evict, err
	}
	var profiles sync.WaitGroup
	for name, addr := range debugAddr {
		profiles.Go(func() {
			if err := fetchProfile(ctx, addr, filepath.Join(profileDir, name+".pprof")); err != nil {
				fmt.Fprintln(os.Stderr, "profile of", name+":", err)
			}
		})
	}
	before, f0 = cpu(), faults()
	var er api.EvictResult
	if err := src.SgctlJSON(ctx, &er, "evict", "vm", "bench", "--to", dst.PeerID, "--direct"); err != nil {
		return put, evict, err
	}
	profiles.Wait()
	evict = Transfer{MBps: float64(er.UniqueBytes) / er.ET.Seconds() / 1e6, CPUPerGiB: (cpu() - before) / (float64(er.UniqueBytes) / (1 << 30)),
		FaultsPerMiB: float64(faults()-f0) / (float64(er.UniqueBytes) / (1 << 20))}
	return put, evict, nil
}

// cpuOf is a process's user+system CPU seconds so far (0 if unknown).
func cpuOf(pid int) float64 {
	cpu, _ := procStat(pid)
	return cpu
}

// procStat reads a process's CPU seconds and minor page faults so far.
func procStat(pid int) (cpu float64, minorFaults int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	// Fields after the command name (which may hold spaces) start at ")".
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0, 0
	}
	minflt, _ := strconv.ParseInt(f[7], 10, 64)
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100, minflt // USER_HZ
}

func cpuSelf() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// fetchProfile writes a 5-second CPU profile of the sgnode serving
// debug endpoints at addr.
func fetchProfile(ctx context.Context, addr, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/debug/pprof/profile?seconds=5", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", addr, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
