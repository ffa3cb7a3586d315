package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/internal/units"
)

func newPeersCmd(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "peers",
		Short: "List peers with RTT, zone and free capacity",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ps, err := e.client().Peers(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, ps)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PEER\tSTATE\tRTT\tZONE\tMEM FREE\tDISK FREE\tLOAD")
			for _, p := range ps {
				state := "disconnected"
				if p.Connected {
					state = "connected"
				}
				if !p.Admitted {
					state += ",not-admitted"
				}
				rtt := "-"
				if p.RTT > 0 {
					rtt = p.RTT.Round(10 * time.Microsecond).String()
				}
				zone := p.Zone
				if zone == "" {
					zone = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", p.ID, state, rtt, zone,
					units.FormatSize(int64(p.MemFree)), units.FormatSize(int64(p.DiskFree)), p.Load)
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
