package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/units"
)

func cmdGet(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "get", "CID -o FILE [--json]")
	out := fs.String("o", "", "write the file here (required)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parse(fs, reorder(fs, args), 1); err != nil {
		return err
	}
	if *out == "" {
		fs.Usage()
		return fmt.Errorf("%w: -o FILE is required", errUsage)
	}
	path, err := filepath.Abs(*out)
	if err != nil {
		return err
	}
	bar := newProgressBar(e, "get")
	res, err := e.client().Get(ctx, api.GetRequest{CID: fs.Arg(0), Output: path}, bar.update)
	bar.done()
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, res)
	}
	fmt.Fprintf(e.stdout, "%s: %s verified in %s (%s); %d chunks, %d zero, %d already local\n",
		res.Output, units.FormatSize(res.Size), res.Duration.Round(1e6), rate(res.Size, res.Duration),
		res.Chunks, res.ZeroChunks, res.LocalChunks)
	peers := make([]string, 0, len(res.Fetched))
	for p := range res.Fetched {
		peers = append(peers, p)
	}
	sort.Strings(peers)
	for _, p := range peers {
		fmt.Fprintf(e.stdout, "  from %s: %s\n", shortID(p), units.FormatSize(res.Fetched[p]))
	}
	return nil
}
