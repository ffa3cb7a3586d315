package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/units"
)

func cmdGather(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "gather", "MANIFEST-CID [--from PEER]... [--secret HEX] [--json]")
	var from listFlag
	fs.Var(&from, "from", "fetch from this peer (repeatable; default: every connected peer holding the manifest)")
	secret := fs.String("secret", "", "the manifest's secret, for an eviction encrypted at rest (evict --json prints it; also SG_MANIFEST_SECRET)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parse(fs, reorder(fs, args), 1); err != nil {
		return err
	}
	if *secret == "" {
		*secret = os.Getenv("SG_MANIFEST_SECRET") // keeps it off the process list
	}
	bar := newProgressBar(e, "gather")
	rep, err := e.client().Gather(ctx, api.GatherRequest{CID: fs.Arg(0), From: from, Secret: *secret}, bar.update)
	bar.done()
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, rep)
	}
	fmt.Fprintf(e.stdout, "gathered %d chunks in %s: %d already here, %d fetched\n", rep.ChunksTotal, rep.TMT.Round(time.Millisecond),
		rep.LocalChunks, rep.PrefetchChunks+rep.DemandChunks)
	peers := make([]string, 0, len(rep.FetchedBytes))
	for p := range rep.FetchedBytes {
		peers = append(peers, p)
	}
	sort.Strings(peers)
	for _, p := range peers {
		fmt.Fprintf(e.stdout, "  from %s: %s\n", shortID(p), units.FormatSize(rep.FetchedBytes[p]))
	}
	for _, f := range rep.Files {
		fmt.Fprintf(e.stdout, "  %s\n", f)
	}
	return nil
}
