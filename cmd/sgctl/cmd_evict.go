package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/units"
)

func cmdEvict(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || args[0] != "vm" {
		return fmt.Errorf("%w: sgctl evict vm NAME... --to PEER", errUsage)
	}
	fs := newFlags(e, "evict vm", "NAME... --to PEER [--via PEER]... [--replicas N] [--direct] [--max-rate RATE] [--redundancy K+M] [--disk-chunk SIZE] [--encrypt] [--json]")
	to := fs.String("to", "", "destination peer ID (or a unique part of one)")
	var via listFlag
	fs.Var(&via, "via", "intermediate peer (repeatable; default: every connected peer with free capacity)")
	replicas := fs.Int("replicas", 1, "holders each chunk needs before the source is free (the destination counts)")
	redundancy := fs.String("redundancy", "", "erasure-code instead of replicating, e.g. 4+1: stripes of 4 chunks + 1 parity on 5 different targets; any 1 may be lost")
	direct := fs.Bool("direct", false, "send to the destination only (the pre-/post-copy baseline)")
	maxRate := fs.String("max-rate", "", "cap the source's migration traffic, e.g. 500Mbit or 60MB (bytes/s)")
	diskChunk := fs.String("disk-chunk", "64KiB", "disk chunk size")
	encrypt := fs.Bool("encrypt", false, "encrypt every chunk at rest (convergent: intermediates store ciphertext, which still dedups)")
	asJSON := fs.Bool("json", false, "print the report as JSON (with each sealed manifest's secret)")
	if err := fs.Parse(reorder(fs, args[1:])); err != nil {
		return usageOr(err)
	}
	if fs.NArg() == 0 || *to == "" {
		fs.Usage()
		return fmt.Errorf("%w: name at least one VM and --to", errUsage)
	}
	req := api.EvictRequest{VMs: fs.Args(), To: *to, Via: via, Replicas: *replicas, Direct: *direct, Encrypt: *encrypt, Redundancy: *redundancy}
	if *maxRate != "" {
		r, err := units.ParseRate(*maxRate)
		if err != nil {
			return fmt.Errorf("%w: --max-rate: %v", errUsage, err)
		}
		req.MaxRate = r
	}
	dc, err := units.ParseSize(*diskChunk)
	if err != nil {
		return fmt.Errorf("%w: --disk-chunk: %v", errUsage, err)
	}
	req.DiskChunk = int(dc)

	bar := newProgressBar(e, "evict")
	res, err := e.client().Evict(ctx, req, func(p api.EvictProgress) {
		bar.update(api.Progress{Done: p.BytesRead, Total: p.BytesTotal})
		if e.isTerminal {
			fmt.Fprint(e.stderr, shares(p.Sent))
		}
	})
	bar.done()
	if err != nil {
		return err
	}
	if *asJSON {
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

func printEvictReport(e *env, r *api.EvictResult) {
	w := e.stdout
	fmt.Fprintf(w, "eviction time  %s  (source free)\n", r.ET.Round(time.Millisecond))
	fmt.Fprintf(w, "VM bytes       %s in %d chunks: %d zero, %d duplicate within a VM, %d across VMs, %d already at the destination\n",
		units.FormatSize(r.Bytes), r.Chunks, r.ZeroChunks, r.DupWithin, r.DupAcross, r.AlreadyHeld)
	fmt.Fprintf(w, "sent           %s unique in %d chunks + %s manifest, %d replica(s)\n",
		units.FormatSize(r.UniqueBytes), r.UniqueChunks, units.FormatSize(r.ManifestBytes), r.Replicas)
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
			fmt.Fprintf(w, "  encrypted at rest: the manifest's secret is in --json (needed to gather it elsewhere)\n")
		}
	}
}
