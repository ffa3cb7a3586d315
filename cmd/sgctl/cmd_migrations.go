package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/sgrelay/sg/internal/units"
)

func cmdMigrations(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "rm":
			return cmdMigrationsRemove(ctx, e, args[1:])
		case "prune":
			return cmdMigrationsPrune(ctx, e, args[1:])
		}
	}
	fs := newFlags(e, "migrations", "[--json] | rm ID | prune")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	ms, err := e.client().Migrations(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
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
}

// cmdMigrationsRemove deletes one ended migration's record.
func cmdMigrationsRemove(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "migrations rm", "ID (or its first 8+ characters)")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	res, err := e.client().RemoveMigration(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	for _, id := range res.IDs {
		fmt.Fprintln(e.stdout, "removed", id)
	}
	return nil
}

// cmdMigrationsPrune deletes the records of every ended migration.
func cmdMigrationsPrune(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "migrations prune", "")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	res, err := e.client().PruneMigrations(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "removed %d migration records\n", res.Removed)
	return nil
}
