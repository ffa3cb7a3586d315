package main

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/units"
)

func cmdVerify(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "verify", "MANIFEST-CID [--replicas N] [--fetch] [--json]")
	replicas := fs.Int("replicas", 1, "fail unless every chunk has at least this many holders (erasure-coded: unless N-1 holders may be lost)")
	fetchCopies := fs.Bool("fetch", false, "also fetch and re-hash every copy from every holder")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, reorder(fs, args), 1); err != nil {
		return err
	}
	res, err := e.client().Verify(ctx, api.VerifyRequest{CID: fs.Arg(0), Fetch: *fetchCopies})
	if err != nil {
		return err
	}
	if *asJSON {
		if err := printJSON(e.stdout, res); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(e.stdout, "%s: %s in %d chunks (%d zero, %d distinct)\n", res.Name, units.FormatSize(res.Bytes), res.Chunks, res.ZeroChunks, res.DistinctChunks)
		counts := make([]int, 0, len(res.Holders))
		for k := range res.Holders {
			counts = append(counts, k)
		}
		sort.Ints(counts)
		for _, k := range counts {
			fmt.Fprintf(e.stdout, "  %d chunks held by %d peer(s)\n", res.Holders[k], k)
		}
		if res.Stripes > 0 {
			fmt.Fprintf(e.stdout, "  %d stripes, each with at least %d shard(s) held beyond those that decode it\n", res.Stripes, res.MinStripeSpare)
		}
		fmt.Fprintf(e.stdout, "  tolerates the loss of %d holder(s)\n", res.Tolerates)
		if *fetchCopies {
			fmt.Fprintf(e.stdout, "  %d copies fetched, %d bad, %d gone meanwhile\n", res.CopiesFetched, res.BadCopies, res.Vanished)
		}
	}
	switch {
	case res.Stripes > 0 && res.Tolerates < *replicas-1:
		return fmt.Errorf("the VM survives the loss of %d holder(s), want %d", res.Tolerates, *replicas-1)
	case res.Stripes == 0 && res.MinHolders < *replicas:
		return fmt.Errorf("some chunks have only %d holder(s), want %d", res.MinHolders, *replicas)
	case res.BadCopies > 0:
		return errors.New("some copies failed verification")
	}
	return nil
}
