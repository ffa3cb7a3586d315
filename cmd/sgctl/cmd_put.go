package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/units"
)

func cmdPut(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "put", "FILE [--replicas N] [--chunk-size SIZE] [--expire DURATION] [--json]")
	replicas := fs.Int("replicas", 1, "push every chunk to this many peers (nearest first)")
	chunkSize := fs.String("chunk-size", "64KiB", "chunk size")
	expire := fs.Duration("expire", 0, "the peers drop the copies this long after the put, e.g. 72h (default: kept until sgctl rm)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parse(fs, reorder(fs, args), 1); err != nil {
		return err
	}
	if *expire < 0 {
		return fmt.Errorf("%w: --expire %s: want a positive duration", errUsage, *expire)
	}
	cs, err := units.ParseSize(*chunkSize)
	if err != nil {
		return fmt.Errorf("%w: --chunk-size: %v", errUsage, err)
	}
	path, err := filepath.Abs(fs.Arg(0))
	if err != nil {
		return err
	}
	bar := newProgressBar(e, "put")
	res, err := e.client().Put(ctx, api.PutRequest{Path: path, Replicas: *replicas, ChunkSize: int(cs), Expire: *expire}, bar.update)
	bar.done()
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, res)
	}
	fmt.Fprintln(e.stdout, res.CID)
	fmt.Fprintf(e.stderr, "%s in %d chunks (%d zero, %d duplicate): %s unique + %s manifest, in %s (%s)\n",
		units.FormatSize(res.Size), res.Chunks, res.ZeroChunks, res.DupChunks,
		units.FormatSize(res.UniqueBytes), units.FormatSize(res.ManifestBytes), res.Duration.Round(1e6), rate(res.Size, res.Duration))
	peers := make([]string, 0, len(res.SentBytes))
	for p := range res.SentBytes {
		peers = append(peers, p)
	}
	sort.Strings(peers)
	for _, p := range peers {
		fmt.Fprintf(e.stderr, "  to %s: %s\n", shortID(p), units.FormatSize(res.SentBytes[p]))
	}
	return nil
}

// reorder moves flags before positional arguments, so that
// "put FILE --replicas 2" works as well as "put --replicas 2 FILE". A flag
// takes the next argument as its value unless fs knows it as boolean.
func reorder(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) > 1 && a[0] == '-' {
			flags = append(flags, a)
			if !strings.Contains(a, "=") && !isBoolFlag(fs, a) && i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(flags, pos...)
}

// isBoolFlag reports whether "-name" or "--name" is a boolean flag of fs
// (or help, which the flag package handles itself).
func isBoolFlag(fs *flag.FlagSet, a string) bool {
	name := strings.TrimLeft(a, "-")
	if name == "h" || name == "help" {
		return true
	}
	f := fs.Lookup(name)
	if f == nil {
		return false
	}
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}
