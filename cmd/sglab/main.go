// Command sglab runs sg scenarios on a local cluster of real sgnode
// processes on loopback: the quickest way to see sg work end to end.
//
//	go build -o bin/ ./cmd/... && bin/sglab demo
//
// It looks for sgnode and sgctl next to its own executable (or --bin).
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/units"
	"github.com/sgrelay/sg/lab"
)

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

var errUsage = errors.New("usage: sglab demo [--nodes N] [--size SIZE] [--replicas N] [--keep] [--bin DIR]")

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || args[0] != "demo" {
		return errUsage
	}
	fs := flag.NewFlagSet("sglab demo", flag.ContinueOnError)
	nodes := fs.Int("nodes", 3, "cluster size (at least 2)")
	sizeS := fs.String("size", "64MiB", "size of the generated file")
	replicas := fs.Int("replicas", 2, "replicas for the put")
	keep := fs.Bool("keep", false, "keep the working directory (data dirs, logs)")
	bin := fs.String("bin", "", "directory with sgnode and sgctl (default: next to sglab)")
	if err := fs.Parse(args[1:]); err != nil {
		return errUsage
	}
	size, err := units.ParseSize(*sizeS)
	if err != nil || *nodes < 2 || *replicas < 1 || *replicas >= *nodes {
		return errUsage
	}
	if *bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		*bin = filepath.Dir(exe)
	}
	for _, b := range []string{"sgnode", "sgctl"} {
		if _, err := os.Stat(filepath.Join(*bin, b)); err != nil {
			return fmt.Errorf("%s not found in %s: build with 'go build -o bin/ ./cmd/...'", b, *bin)
		}
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

	names := make([]string, *nodes)
	for i := range names {
		names[i] = fmt.Sprintf("node%d", i+1)
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
	first, last := c.Nodes[0], c.Nodes[len(c.Nodes)-1]
	peersOut, err := last.Sgctl(ctx, "peers")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n$ sgctl peers   (on %s)\n%s", last.Name, peersOut)

	in := filepath.Join(dir, "input.bin")
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(in, data, 0o600); err != nil {
		return err
	}
	var put api.PutResult
	if err := first.SgctlJSON(ctx, &put, "put", in, "--replicas", fmt.Sprint(*replicas)); err != nil {
		return err
	}
	fmt.Fprintf(out, "\n$ sgctl put input.bin --replicas %d   (on %s)\n%s\n", *replicas, first.Name, put.CID)
	fmt.Fprintf(out, "  %s in %d chunks, pushed to %d peers in %s (%s per replica)\n",
		units.FormatSize(put.Size), put.Chunks, len(put.SentBytes), put.Duration.Round(time.Millisecond),
		units.FormatRate(float64(put.Size)/put.Duration.Seconds()))

	// The first node kept nothing, so its get crosses the network.
	outPath := filepath.Join(dir, "output.bin")
	got, err := first.Sgctl(ctx, "get", put.CID, "-o", outPath)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n$ sgctl get %s -o output.bin   (on %s)\n%s", put.CID, first.Name, got)
	b, err := os.ReadFile(outPath)
	if err != nil {
		return err
	}
	if !bytes.Equal(b, data) {
		return errors.New("FAILED: output differs from input")
	}
	fmt.Fprintln(out, "\nOK: output is byte-identical to input")
	return nil
}
