package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/internal/units"
)

func newStatusCmd(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show this node: peer ID, addresses, store usage, uptime",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := e.client().Status(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, st)
			}
			fmt.Fprintf(e.stdout, "peer ID:  %s\n", st.PeerID)
			for _, a := range st.Addrs {
				fmt.Fprintf(e.stdout, "address:  %s\n", a)
			}
			if st.Zone != "" {
				fmt.Fprintf(e.stdout, "zone:     %s\n", st.Zone)
			}
			fmt.Fprintf(e.stdout, "uptime:   %s\n", st.Uptime.Round(time.Second))
			fmt.Fprintf(e.stdout, "version:  %s\n", st.Version)
			for _, t := range st.Tiers {
				fmt.Fprintf(e.stdout, "store %-6s %d chunks, %s used of %s\n", t.Name+":", t.Chunks, units.FormatSize(t.Used), units.FormatSize(t.Budget))
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
