package main

import (
	"errors"
	"fmt"
	"sort"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/cli"
	"github.com/sgrelay/sg/internal/units"
)

func newVerifyCmd(e *env) *cobra.Command {
	var (
		replicas    cli.Int
		fetchCopies bool
		asJSON      bool
	)
	c := &cobra.Command{
		Use:   "verify MANIFEST-CID",
		Short: "Check that every chunk of a manifest is held (and intact) across peers",
		Args:  cli.ExactArgs("MANIFEST-CID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := e.client().Verify(cmd.Context(), api.VerifyRequest{CID: args[0], Fetch: fetchCopies})
			if err != nil {
				return err
			}
			if asJSON {
				if err := printJSON(e.stdout, res); err != nil {
					return err
				}
			} else {
				printVerify(e, res, fetchCopies)
			}
			want := replicas.V
			switch {
			case res.Stripes > 0 && res.Tolerates < want-1:
				return fmt.Errorf("the VM survives the loss of %d holder(s), want %d", res.Tolerates, want-1)
			case res.Stripes == 0 && res.MinHolders < want:
				return fmt.Errorf("some chunks have only %d holder(s), want %d", res.MinHolders, want)
			case res.BadCopies > 0:
				return errors.New("some copies failed verification")
			}
			return nil
		},
	}
	fl := c.Flags()
	cli.IntVar(fl, &replicas, "replicas", 1, 1, 64, "--replicas 2", "fail unless every chunk has at least this many holders (erasure-coded: unless N-1 holders may be lost)")
	fl.BoolVar(&fetchCopies, "fetch", false, "also fetch and re-hash every copy from every holder")
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func printVerify(e *env, res *api.VerifyResult, fetched bool) {
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
	if fetched {
		fmt.Fprintf(e.stdout, "  %d copies fetched, %d bad, %d gone meanwhile\n", res.CopiesFetched, res.BadCopies, res.Vanished)
	}
}
