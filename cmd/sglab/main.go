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
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/cli"
	"github.com/sgrelay/sg/internal/lab"
	"github.com/sgrelay/sg/internal/units"
	"github.com/sgrelay/sg/internal/workload"
)

func shortPeer(id string) string { return id[:8] + "…" + id[len(id)-6:] }

// version is set at link time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(cli.Execute(ctx, newRootCmd(cli.Version(version), os.Stdout), os.Args[1:], os.Stdout, os.Stderr))
}

// newRootCmd builds sglab's command tree, reporting to out.
func newRootCmd(version string, out io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "sglab",
		Short: "Run sg on a local cluster of real sgnode processes",
		Long: `sglab runs sg on a local cluster of real sgnode processes on loopback: the
quickest way to see sg work end to end. It looks for sgnode and sgctl next
to its own executable (or --bin): build them with 'go build -o bin/ ./cmd/...'.`,
	}
	root.AddCommand(newDemoCmd(out), newBenchCmd(out), &cobra.Command{
		Use:    rawquicServe,
		Short:  "Run the raw quic-go sink of the bench (started by sglab bench)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE:   func(cmd *cobra.Command, _ []string) error { return serveRawQUIC(cmd.Context(), out) },
	})
	cli.SetVersion(root, version)
	cli.AddManCommand(root, version)
	return root
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

// demoOptions are sglab demo's flags.
type demoOptions struct {
	nodes, replicas cli.Int
	size            cli.Size
	redundancy, bin string
	encrypt, keep   bool
}

func newDemoCmd(out io.Writer) *cobra.Command {
	var o demoOptions
	c := &cobra.Command{
		Use:   "demo",
		Short: "Evict a generated VM through intermediates and check it byte for byte",
		Long: `Generate a VM, evict it from the source to the destination with
intermediates, wait for the destination to gather it, and check it byte for
byte.`,
		Example: "  sglab demo --nodes 5 --size 384MiB --redundancy 2+1 --encrypt",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.replicas.V >= o.nodes.V {
				return cli.Usagef("--replicas %d: want fewer than --nodes (%d), e.g. --replicas 2 --nodes 5", o.replicas.V, o.nodes.V)
			}
			return demo(cmd.Context(), o, out)
		},
	}
	fl := c.Flags()
	cli.IntVar(fl, &o.nodes, "nodes", 5, 2, 64, "--nodes 5", "cluster size: a source, a destination and intermediates")
	cli.SizeVar(fl, &o.size, "size", 384<<20, 1<<20, 64<<30, "size of the generated VM (2/3 memory, 1/3 disk)")
	cli.IntVar(fl, &o.replicas, "replicas", 1, 1, 63, "--replicas 2", "holders each chunk needs before the source is free")
	fl.StringVar(&o.redundancy, "redundancy", "", "erasure-code the chunks, `K+M`, e.g. 2+1 (needs K+M ≤ nodes-1)")
	fl.BoolVar(&o.encrypt, "encrypt", false, "encrypt the chunks at rest on the intermediates")
	fl.BoolVar(&o.keep, "keep", false, "keep the working directory (data dirs, logs)")
	fl.StringVar(&o.bin, "bin", "", "`dir`ectory with sgnode and sgctl (default: next to sglab)")
	return c
}

func demo(ctx context.Context, o demoOptions, out io.Writer) error {
	size := o.size.V
	bin, err := binDir(o.bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "sglab-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintf(out, "working directory: %s (kept)\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	names := []string{"source", "destination"}
	for i := 2; i < o.nodes.V; i++ {
		names = append(names, fmt.Sprintf("relay%d", i-1))
	}
	fmt.Fprintf(out, "starting %d sgnode processes on loopback…\n", o.nodes.V)
	c, err := lab.Start(ctx, lab.Config{Bin: bin, Dir: dir, Names: names})
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
	if o.redundancy != "" {
		evictArgs = append(evictArgs, "--redundancy", o.redundancy)
	} else {
		evictArgs = append(evictArgs, "--replicas", fmt.Sprint(o.replicas.V))
	}
	if o.encrypt {
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
