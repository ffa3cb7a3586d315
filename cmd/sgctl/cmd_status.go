package main

import (
	"context"
	"fmt"
	"time"

	"github.com/sgrelay/sg/internal/units"
)

func cmdStatus(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "status", "[--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	st, err := e.client().Status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
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
}
