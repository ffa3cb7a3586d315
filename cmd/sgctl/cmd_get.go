package main

import (
	"fmt"
	"path/filepath"
	"sort"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/cli"
	"github.com/sgrelay/sg/internal/units"
)

func newGetCmd(e *env) *cobra.Command {
	var (
		out    string
		asJSON bool
	)
	c := &cobra.Command{
		Use:     "get CID -o FILE",
		Short:   "Fetch a file by CID from the peers that hold it",
		Example: "  sgctl get bafkrei... -o image.raw",
		Args:    cli.ExactArgs("CID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return cli.Usagef("-o/--output FILE is required, e.g. -o image.raw")
			}
			path, err := filepath.Abs(out)
			if err != nil {
				return err
			}
			bar := newProgressBar(e, "get")
			res, err := e.client().Get(cmd.Context(), api.GetRequest{CID: args[0], Output: path}, bar.update)
			bar.done()
			if err != nil {
				return err
			}
			if asJSON {
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
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "write the `file` here (required)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return c
}
