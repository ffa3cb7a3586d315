package main

import (
	"fmt"
	"path/filepath"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/cli"
	"github.com/sgrelay/sg/internal/units"
)

func newPutCmd(e *env) *cobra.Command {
	var (
		replicas  cli.Int
		chunkSize cli.Size
		expire    time.Duration
		asJSON    bool
	)
	c := &cobra.Command{
		Use:   "put FILE",
		Short: "Cut a file into chunks and push them to peers; print its CID",
		Example: `  sgctl put image.raw
  sgctl put image.raw --replicas 2 --chunk-size 1MiB --expire 72h`,
		Args: cli.ExactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if expire < 0 {
				return cli.Usagef("--expire %s: want a positive duration, e.g. --expire 72h", expire)
			}
			path, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			bar := newProgressBar(e, "put")
			res, err := e.client().Put(cmd.Context(), api.PutRequest{Path: path, Replicas: replicas.V, ChunkSize: int(chunkSize.V), Expire: expire}, bar.update)
			bar.done()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, res)
			}
			fmt.Fprintln(e.stdout, res.CID)
			var sent int64
			for _, b := range res.SentBytes {
				sent += b
			}
			fmt.Fprintf(e.stderr, "%s in %d chunks (%d zero, %d duplicate, %s unique): sent %s + %s manifest, in %s (%s)\n",
				units.FormatSize(res.Size), res.Chunks, res.ZeroChunks, res.DupChunks, units.FormatSize(res.UniqueBytes),
				units.FormatSize(sent), units.FormatSize(res.ManifestBytes), res.Duration.Round(1e6), rate(res.Size, res.Duration))
			peers := make([]string, 0, len(res.SentBytes))
			for p := range res.SentBytes {
				peers = append(peers, p)
			}
			sort.Strings(peers)
			for _, p := range peers {
				fmt.Fprintf(e.stderr, "  to %s: %s\n", shortID(p), units.FormatSize(res.SentBytes[p]))
			}
			return nil
		},
	}
	fl := c.Flags()
	cli.IntVar(fl, &replicas, "replicas", 1, 1, 64, "--replicas 2", "push every chunk to this many peers (nearest first)")
	cli.SizeVar(fl, &chunkSize, "chunk-size", 64<<10, 4<<10, 1<<20, "chunk size, 4KiB to 1MiB")
	fl.DurationVar(&expire, "expire", 0, "the peers drop the copies this long after the put, e.g. 72h (default: kept until sgctl rm)")
	fl.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return c
}
