package main

import (
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/cli"
	"github.com/sgrelay/sg/internal/units"
)

func newGatherCmd(e *env) *cobra.Command {
	var (
		from   []string
		secret string
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "gather MANIFEST-CID",
		Short: "Gather an existing VM manifest here from the peers that hold it",
		Args:  cli.ExactArgs("MANIFEST-CID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if secret == "" {
				secret = os.Getenv("SG_MANIFEST_SECRET") // keeps it off the process list
			}
			bar := newProgressBar(e, "gather")
			rep, err := e.client().Gather(cmd.Context(), api.GatherRequest{CID: args[0], From: from, Secret: secret}, bar.update)
			bar.done()
			if err != nil {
				return err
			}
			if asJSON {
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
		},
	}
	fl := c.Flags()
	fl.StringArrayVar(&from, "from", nil, "fetch from this `peer` (repeatable; default: every connected peer holding the manifest)")
	fl.StringVar(&secret, "secret", "", "the manifest's secret (`hex`), for an eviction encrypted at rest (evict prints it; also $SG_MANIFEST_SECRET)")
	fl.BoolVar(&asJSON, "json", false, "print the report as JSON")
	_ = c.RegisterFlagCompletionFunc("from", completePeers(e)) // fails only for an unknown flag
	return c
}
