package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/internal/cli"
	"github.com/sgrelay/sg/internal/units"
)

func newMigrationsCmd(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "migrations",
		Short: "List running and finished migrations",
		Long: `List this node's running and finished migrations, both roles. With --json,
a source's record holds the eviction's report, with the secret of each
manifest encrypted at rest.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ms, err := e.client().Migrations(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, ms)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MIGRATION\tVM\tROLE\tPEER\tSTATE\tSIZE\tET\tMANIFEST")
			for _, m := range ms {
				et := "-"
				if m.ET > 0 {
					et = m.ET.Round(time.Millisecond).String()
				}
				state := m.State
				if m.Role == "destination" && m.Chunks > 0 && m.State == "running" {
					state = fmt.Sprintf("running %d%% placed", m.Placed*100/m.Chunks)
				}
				if m.Error != "" {
					state += ": " + m.Error
				}
				if m.Retired {
					state += " (retired)"
				}
				if g := m.Guest; g != nil {
					state += ", guest " + g.State
					if g.State == "running" {
						state += fmt.Sprintf(" (pid %d, downtime %v)", g.PID, g.Downtime.Round(time.Millisecond))
					}
					if g.Error != "" {
						state += ": " + g.Error
					}
				}
				man := m.Manifest
				if man == "" {
					man = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID[:12], m.VM, m.Role, shortID(m.Peer), state,
					units.FormatSize(m.Bytes), et, man)
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.AddCommand(&cobra.Command{
		Use:   "rm ID",
		Short: "Delete one ended migration's record (ID or its first 8+ characters)",
		Args:  cli.ExactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := e.client().RemoveMigration(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			for _, id := range res.IDs {
				fmt.Fprintln(e.stdout, "removed", id)
			}
			return nil
		},
	}, &cobra.Command{
		Use:   "prune",
		Short: "Delete the records of every ended migration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := e.client().PruneMigrations(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "removed %d migration records\n", res.Removed)
			return nil
		},
	})
	return c
}
