package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/internal/cli"
)

// newRmCmd drops a put this node made from the peers that hold its
// copies: they keep a put's chunks until it is removed (or expires).
func newRmCmd(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "rm CID",
		Short: "Remove a put's copies from the peers that hold them",
		Args:  cli.ExactArgs("CID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := e.client().RemovePut(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, res)
			}
			fmt.Fprintf(e.stdout, "removed %s from %d peer(s)\n", res.CID, len(res.Peers))
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return c
}
