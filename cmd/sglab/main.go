// Command sglab runs sg on a local cluster of real sgnode processes on
// loopback: the quickest way to see sg work end to end. `sglab demo`
// generates a VM, evicts it from the source to the destination with
// intermediates, waits for the destination to gather it, and checks it
// byte for byte.
//
//	go build -o bin/ ./cmd/... && bin/sglab demo
//
// It looks for sgnode and sgctl next to its own executable (or --bin).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/lab"
	"github.com/sgrelay/sg/internal/units"
	"github.com/sgrelay/sg/internal/workload"
)

func shortPeer(id string) string { return id[:8] + "…" + id[len(id)-6:] }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "sglab:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New(`usage:
  sglab demo  [--nodes N] [--size SIZE] [--replicas N | --redundancy K+M] [--encrypt] [--keep] [--bin DIR]
  sglab bench [--size SIZE] [--json FILE] [--bin DIR]`)

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	switch args[0] {
	case "demo":
		return demo(ctx, args, out)
	case "bench":
		return bench(ctx, args, out)
	case rawquicServe:
		return serveRawQUIC(ctx, out)
	}
	return errUsage
}

// binDir returns dir, or the directory of this executable, after checking
// that it holds sgnode and sgctl.
func binDir(dir string) (string, error) {
	if dir == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", err
		}
		dir = filepath.Dir(exe)
	}
	for _, b := range []string{"sgnode", "sgctl"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("%s not found in %s: build with 'go build -o bin/ ./cmd/...'", b, dir)
		}
	}
	return dir, nil
}

func demo(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("sglab demo", flag.ContinueOnError)
	nodes := fs.Int("nodes", 5, "cluster size: a source, a destination and intermediates (at least 2)")
	sizeS := fs.String("size", "384MiB", "size of the generated VM (2/3 memory, 1/3 disk)")
	replicas := fs.Int("replicas", 1, "holders each chunk needs before the source is free")
	redundancy := fs.String("redundancy", "", "erasure-code the chunks, e.g. 2+1 (needs K+M ≤ nodes-1)")
	encrypt := fs.Bool("encrypt", false, "encrypt the chunks at rest on the intermediates")
	keep := fs.Bool("keep", false, "keep the working directory (data dirs, logs)")
	bin := fs.String("bin", "", "directory with sgnode and sgctl (default: next to sglab)")
	if err := fs.Parse(args[1:]); err != nil {
		return errUsage
	}
	size, err := units.ParseSize(*sizeS)
	if err != nil || *nodes < 2 || *replicas < 1 || *replicas >= *nodes || size < 1<<20 {
		return errUsage
	}
	if *bin, err = binDir(*bin); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "sglab-")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Fprintf(out, "working directory: %s (kept)\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	names := []string{"source", "destination"}
	for i := 2; i < *nodes; i++ {
		names = append(names, fmt.Sprintf("relay%d", i-1))
	}
	fmt.Fprintf(out, "starting %d sgnode processes on loopback…\n", *nodes)
	c, err := lab.Start(ctx, lab.Config{Bin: *bin, Dir: dir, Names: names})
	if err != nil {
		return err
	}
	defer c.Stop()
	if err := c.WaitConnected(ctx, 30*time.Second); err != nil {
		return err
	}
	src, dst := c.Nodes[0], c.Nodes[1]
	var report []byte
	peersOut, err := src.Sgctl(ctx, "peers")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n$ sgctl peers   (on the %s)\n%s", src.Name, peersOut)

	// A generated VM: 30% zero pages, 20% shared with its base image, 10%
	// repeated within, the rest unique.
	spec := workload.Spec{Seed: 1, BaseSeed: 42, MemSize: size / 3 * 2 / 4096 * 4096, DiskSize: size / 3 / 65536 * 65536,
		PageSize: 4096, DiskBlock: 65536, ZeroFrac: 0.3, SharedFrac: 0.2, RepeatFrac: 0.1}
	mem, disk := filepath.Join(dir, "web1.mem"), filepath.Join(dir, "web1.disk")
	if err := spec.WriteFiles(mem, disk); err != nil {
		return err
	}
	if _, err := src.Sgctl(ctx, "vm", "add", "web1", "--mem", mem, "--disk", disk); err != nil {
		return err
	}
	fmt.Fprintf(out, "\n$ sgctl vm add web1 --mem web1.mem --disk web1.disk   (%s + %s)\n",
		units.FormatSize(spec.MemSize), units.FormatSize(spec.DiskSize))

	evictArgs := []string{"evict", "vm", "web1", "--to", dst.PeerID}
	if *redundancy != "" {
		evictArgs = append(evictArgs, "--redundancy", *redundancy)
	} else {
		evictArgs = append(evictArgs, "--replicas", fmt.Sprint(*replicas))
	}
	if *encrypt {
		evictArgs = append(evictArgs, "--encrypt")
	}
	report, err = src.Sgctl(ctx, evictArgs...)
	if err != nil {
		return err
	}
	shown := append([]string{"sgctl", "evict", "vm", "web1", "--to", shortPeer(dst.PeerID)}, evictArgs[5:]...)
	fmt.Fprintf(out, "\n$ %s   (on the %s)\n%s", strings.Join(shown, " "), src.Name, report)

	// The destination gathers on: wait for it, then compare byte for byte.
	var m api.Migration
	for deadline := time.Now().Add(5 * time.Minute); ; {
		var ms []api.Migration
		if err := dst.SgctlJSON(ctx, &ms, "migrations"); err != nil {
			return err
		}
		if len(ms) > 0 && ms[0].State != api.StateRunning {
			m = ms[0]
			break
		}
		if time.Now().After(deadline) {
			return errors.New("FAILED: the gather did not complete in 5 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	migs, err := dst.Sgctl(ctx, "migrations")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n$ sgctl migrations   (on the %s)\n%s", dst.Name, migs)
	if m.State != api.StateDone || m.Gather == nil {
		return fmt.Errorf("FAILED: gather %s: %s", m.State, m.Error)
	}
	g := m.Gather
	fmt.Fprintf(out, "  gather: TMT %s, %d chunks reused locally, %d prefetched, %d demand, fetched from %d holders; files %v\n",
		g.TMT.Round(time.Millisecond), g.LocalChunks, g.PrefetchChunks, g.DemandChunks, len(g.FetchedBytes), g.Files)
	for i, want := range []string{mem, disk} {
		a, err := os.ReadFile(g.Files[i])
		if err != nil {
			return err
		}
		b, err := os.ReadFile(want)
		if err != nil {
			return err
		}
		if !bytes.Equal(a, b) {
			return fmt.Errorf("FAILED: %s differs from %s", g.Files[i], want)
		}
	}
	fmt.Fprintln(out, "\nOK: the VM's memory and disk at the destination are byte-identical to the source's")
	return nil
}
