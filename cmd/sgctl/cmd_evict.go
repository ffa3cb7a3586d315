package main

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/cli"
	"github.com/sgrelay/sg/internal/units"
)

func newEvictCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "evict",
		Short: "Evict VMs to a destination",
	}
	c.AddCommand(newEvictVMCmd(e))
	return c
}

func newEvictVMCmd(e *env) *cobra.Command {
	var (
		req       api.EvictRequest
		replicas  cli.Int
		maxRate   cli.Rate
		diskChunk cli.Size
		asJSON    bool
	)
	c := &cobra.Command{
		Use:   "vm NAME... --to PEER",
		Short: "Evict registered VMs to a destination, scattering through intermediates",
		Long: `Evict registered VMs to a destination. The source pushes each VM's chunks
to the destination and to intermediates at once, and is free (the command
returns) when every chunk has --replicas holders; the destination gathers
the rest from the intermediates.`,
		Example: `  sgctl evict vm web1 --to 12D3KooWAbc
  sgctl evict vm web1 db1 --to 12D3KooWAbc --replicas 2 --max-rate 1Gbit
  sgctl evict vm web1 --to 12D3KooWAbc --redundancy 4+1 --encrypt`,
		Args: cli.MinArgs(1, "at least one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.To == "" {
				return cli.Usagef("--to is required: the destination's peer ID (or a unique part of one), e.g. --to 12D3KooWAbc")
			}
			req.VMs, req.Replicas, req.MaxRate, req.DiskChunk = args, replicas.V, maxRate.V, int(diskChunk.V)
			return evict(cmd, e, req, asJSON)
		},
	}
	fl := c.Flags()
	fl.StringVar(&req.To, "to", "", "destination `peer` ID (or a unique part of one)")
	fl.StringArrayVar(&req.Via, "via", nil, "intermediate `peer` (repeatable; default: every connected peer with free capacity)")
	cli.IntVar(fl, &replicas, "replicas", 1, 1, 64, "--replicas 2", "holders each chunk needs before the source is free (the destination counts)")
	fl.StringVar(&req.Redundancy, "redundancy", "", "erasure-code instead of replicating, `K+M`, e.g. 4+1: stripes of 4 chunks + 1 parity on 5 different targets; any 1 may be lost")
	fl.BoolVar(&req.Direct, "direct", false, "send to the destination only (the pre-/post-copy baseline)")
	cli.RateVar(fl, &maxRate, "max-rate", "cap the source's migration traffic: bits/s (100Mbit, 100Mbps, 1Gbit) or bytes/s (60MB/s)")
	cli.SizeVar(fl, &diskChunk, "disk-chunk", 64<<10, 4<<10, 1<<20, "disk chunk size, 4KiB to 1MiB")
	fl.BoolVar(&req.Encrypt, "encrypt", false, "encrypt every chunk at rest (convergent: intermediates store ciphertext, which still dedups); prints the manifest's secret")
	fl.BoolVar(&asJSON, "json", false, "print the report as JSON (with each sealed manifest's secret)")
	c.ValidArgsFunction = completeVMs(e)
	for _, f := range []string{"to", "via"} {
		_ = c.RegisterFlagCompletionFunc(f, completePeers(e)) // fails only for an unknown flag
	}
	return c
}

func evict(cmd *cobra.Command, e *env, req api.EvictRequest, asJSON bool) error {
	bar := newProgressBar(e, "evict")
	res, err := e.client().Evict(cmd.Context(), req, func(p api.EvictProgress) {
		bar.update(api.Progress{Done: p.BytesRead, Total: p.BytesTotal})
		if e.isTerminal {
			fmt.Fprint(e.stderr, shares(p.Sent))
		}
	})
	bar.done()
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(e.stdout, res)
	}
	printEvictReport(e, res)
	return nil
}

// shares renders each target's share of the bytes sent so far.
func shares(sent map[string]int64) string {
	var total int64
	for _, v := range sent {
		total += v
	}
	if total == 0 {
		return ""
	}
	peers := make([]string, 0, len(sent))
	for p := range sent {
		peers = append(peers, p)
	}
	sort.Strings(peers)
	var b strings.Builder
	for _, p := range peers {
		fmt.Fprintf(&b, " %s:%d%%", p[len(p)-4:], sent[p]*100/total)
	}
	return b.String()
}

// printEvictReport prints what the eviction did. Its "sent" line counts
// the bytes that crossed the wire (chunks acknowledged by their targets
// and the manifest copies pushed), not the unique bytes that might have:
// chunks the destination already held were never sent.
func printEvictReport(e *env, r *api.EvictResult) {
	w := e.stdout
	var wire int64
	for _, v := range r.SentBytes {
		wire += v
	}
	fmt.Fprintf(w, "eviction time  %s  (source free)\n", r.ET.Round(time.Millisecond))
	fmt.Fprintf(w, "VM bytes       %s in %d chunks: %d zero, %d duplicate within a VM, %d across VMs, %d already at the destination\n",
		units.FormatSize(r.Bytes), r.Chunks, r.ZeroChunks, r.DupWithin, r.DupAcross, r.AlreadyHeld)
	fmt.Fprintf(w, "sent           %s of chunks and %s of manifest over the wire (unique: %d chunks, %s; %d replica(s))\n",
		units.FormatSize(wire), units.FormatSize(r.ManifestPushed), r.UniqueChunks, units.FormatSize(r.UniqueBytes), r.Replicas)
	if r.Redundancy != "" {
		fmt.Fprintf(w, "redundancy     %s: %s of parity in %d chunks (stripes on distinct targets)\n",
			r.Redundancy, units.FormatSize(r.ParityBytes), r.ParityChunks)
	}
	fmt.Fprintf(w, "rates          effective %s (VM bytes / ET), wire %s\n", units.FormatRate(r.EffectiveRate), units.FormatRate(r.WireRate))
	peers := make([]string, 0, len(r.SentBytes))
	for p := range r.SentBytes {
		peers = append(peers, p)
	}
	sort.Strings(peers)
	for _, p := range peers {
		role := "intermediate"
		if p == r.Destination {
			role = "destination"
		}
		fmt.Fprintf(w, "  %-12s %s  %s\n", role, p, units.FormatSize(r.SentBytes[p]))
	}
	if r.EndgameBytes > 0 {
		fmt.Fprintf(w, "endgame        %s of spare copies sent to idle targets to finish sooner\n", units.FormatSize(r.EndgameBytes))
	}
	if r.Repaired > 0 {
		fmt.Fprintf(w, "repaired       %d chunks re-sent after an intermediate was lost\n", r.Repaired)
	}
	for _, v := range r.VMs {
		fmt.Fprintf(w, "%s: manifest %s  migration %s\n", v.Name, v.Manifest, v.MigrationID)
		if v.ManifestSecret != "" {
			fmt.Fprintf(w, "  encrypted at rest; the manifest's secret (sgctl gather --secret, or $SG_MANIFEST_SECRET, to gather it elsewhere):\n")
			fmt.Fprintf(w, "  secret %s\n", v.ManifestSecret)
			if v.SecretFile != "" {
				fmt.Fprintf(w, "  kept on this node in %s (mode 0600) and in 'sgctl migrations --json'\n", v.SecretFile)
			}
		}
	}
}
