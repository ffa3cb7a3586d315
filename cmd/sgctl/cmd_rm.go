package main

import (
	"context"
	"fmt"
)

// cmdRm drops a put this node made from the peers that hold its copies:
// they keep a put's chunks until it is removed (or expires).
func cmdRm(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "rm", "CID [--json]")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parse(fs, reorder(fs, args), 1); err != nil {
		return err
	}
	res, err := e.client().RemovePut(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, res)
	}
	fmt.Fprintf(e.stdout, "removed %s from %d peer(s)\n", res.CID, len(res.Peers))
	return nil
}
