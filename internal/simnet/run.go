package simnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/cluster"
	"github.com/sgrelay/sg/internal/eviction"
	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/wire"
)

// Result is what one run measured, in virtual time.
type Result struct {
	// ET is the eviction time: from the start until the source holds
	// nothing that exists nowhere else.
	ET time.Duration
	// TMT is the total migration time: from the start until the
	// destination holds every VM whole (the last one).
	TMT time.Duration
	// Downtime runs from the pause at the source until the destination
	// serves the guest's first read (with no guest trace: until the
	// migration is open there).
	Downtime time.Duration

	VMBytes      int64 // every byte of every VM
	NonZeroBytes int64 // bytes of non-zero chunks, duplicates included
	UniqueBytes  int64 // bytes of distinct non-zero chunks: what must travel once

	Evict  *eviction.Result
	Gather []fetch.Report // one per VM
	Trace  TraceResult

	// LinkBytes[a][b] is what node a sent to node b on the wire (QUIC
	// packets, headers and all).
	LinkBytes map[string]map[string]int64
	// HolderBytes is chunk bytes the destination fetched, per holder name
	// (the source by position included).
	HolderBytes map[string]int64
	// Verified is set when every gathered byte was compared with the
	// source image and matched.
	Verified bool
}

// Sent is what node a sent in all.
func (r *Result) Sent(a string) int64 {
	var n int64
	for _, v := range r.LinkBytes[a] {
		n += v
	}
	return n
}

// Received is what node b received in all.
func (r *Result) Received(b string) int64 {
	var n int64
	for _, m := range r.LinkBytes {
		n += m[b]
	}
	return n
}

// DemandReads and NetworkFaults sum the gathers' reports.
func (r *Result) DemandReads() (reads, faults int64) {
	for _, g := range r.Gather {
		reads += g.DemandReads
		faults += g.NetworkFaults
	}
	return reads, faults
}

// Run runs scenario t from start to finish: start the cluster, evict the
// VMs from the source (faults firing on time), let the destination gather
// them while the guest replays its trace, verify if asked, and stop. Call
// it inside a synctest bubble; dir holds the gathered files.
func Run(t *Topology, dir string) (*Result, error) {
	c, err := Start(t, dir)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.run()
}

func (c *Cluster) run() (*Result, error) {
	t := c.topo
	res := &Result{}
	vms, err := c.vms(res)
	if err != nil {
		return nil, err
	}
	src, dst := c.nodes[t.role(Source)], c.nodes[t.role(Destination)]
	cfg := eviction.DefaultConfig(dst.node.ID().String())
	cfg.Log = c.log.With("node", src.spec.Name)
	cfg.Direct, cfg.Replicas, cfg.MaxRate = t.Evict.Direct, max(1, t.Evict.Replicas), int64(t.Evict.MaxMBps*1e6)
	cfg.Seal = t.Evict.Encrypt
	if !t.Evict.UplinkUnknown {
		cfg.Uplink = int64(src.spec.UpMbps * 1e6 / 8)
	}
	if t.Evict.Redundancy != "" {
		if cfg.Redundancy, err = eviction.ParseRedundancy(t.Evict.Redundancy); err != nil {
			return nil, err
		}
	}
	if !cfg.Direct {
		for _, sn := range c.nodes {
			if (len(t.Evict.Via) == 0 && sn.spec.Role == Intermediate) || slices.Contains(t.Evict.Via, sn.spec.Name) {
				cfg.Via = append(cfg.Via, sn.node.ID().String())
			}
		}
	}
	e, err := eviction.New(cluster.NewNet(src.node), vms, cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	evicted := make(chan struct{})
	faultsDone := c.scheduleFaults(ctx, start, evicted)
	defer func() { <-faultsDone }()

	ids := e.MigrationIDs()
	guest := make(chan TraceResult, 1)
	go func() {
		g, err := c.waitGatherer(ctx, dst, ids[0])
		if err != nil {
			guest <- TraceResult{Err: err}
			return
		}
		guest <- ReplayTrace(ctx, g, t.Gather.Trace, vms[0].Regions[t.Gather.Trace.Region].ChunkSize)
	}()

	stop := src.roles.Evicting(e)
	res.Evict, err = e.Run(ctx, nil)
	stop()
	if err != nil {
		cancel()
		<-guest
		return nil, fmt.Errorf("eviction: %w", err)
	}
	res.ET = res.Evict.ET
	close(evicted)

	if t.Gather.NoPrefetch {
		// Only what the guest reads arrives: no gather completes, so the
		// run ends with the trace (TMT stays 0).
		res.Trace = <-guest
		if res.Trace.Err != nil {
			return nil, fmt.Errorf("guest trace: %w", res.Trace.Err)
		}
		for _, id := range ids {
			g, err := c.waitGatherer(ctx, dst, id)
			if err != nil {
				return nil, err
			}
			res.Gather = append(res.Gather, g.Report())
		}
		if t.Gather.Trace.Reads > 0 {
			res.Downtime = res.Trace.FirstRead.Sub(start)
		}
		res.LinkBytes, res.HolderBytes = c.linkBytes(), c.holderBytes(res.Gather)
		return res, nil
	}
	for _, id := range ids {
		g, err := c.waitGatherer(ctx, dst, id)
		if err != nil {
			return nil, err
		}
		select {
		case <-g.Done():
		case <-time.After(24 * time.Hour):
			return nil, fmt.Errorf("gather of %s did not finish in a day of virtual time", id)
		}
		rep := g.Report()
		if rep.Err != "" {
			return nil, fmt.Errorf("gather of %s: %s", rep.VM, rep.Err)
		}
		res.Gather = append(res.Gather, rep)
	}
	res.Trace = <-guest
	if res.Trace.Err != nil {
		return nil, fmt.Errorf("guest trace: %w", res.Trace.Err)
	}
	for i, rep := range res.Gather {
		// Report.TMT counts from the open, which follows the start.
		in, err := dst.roles.Incomings().Get(ids[i])
		if err != nil {
			return nil, err
		}
		res.TMT = max(res.TMT, in.Status().Opened.Sub(start)+rep.TMT)
		if t.Gather.Trace.Reads == 0 {
			res.Downtime = max(res.Downtime, in.Status().Opened.Sub(start))
		}
	}
	if t.Gather.Trace.Reads > 0 {
		res.Downtime = res.Trace.FirstRead.Sub(start)
	}
	res.LinkBytes, res.HolderBytes = c.linkBytes(), c.holderBytes(res.Gather)
	if t.Gather.Verify {
		for i, id := range ids {
			g, _ := c.waitGatherer(ctx, dst, id)
			if err := verifyGathered(ctx, g, vms[i]); err != nil {
				return nil, err
			}
		}
		res.Verified = true
	}
	return res, nil
}

// vms builds the eviction's VMs from their specs and counts, by hashing
// every chunk, the bytes an ideal eviction must move.
func (c *Cluster) vms(res *Result) ([]eviction.VM, error) {
	seen := map[chunk.ID]bool{}
	var out []eviction.VM
	for _, s := range c.topo.VMs {
		v := eviction.VM{Name: s.Name, Regions: []eviction.Region{
			{Name: "mem", Kind: manifest.KindMemory, Size: s.MemSize, ChunkSize: s.PageSize, Data: s.Memory()},
		}}
		if s.DiskSize > 0 {
			v.Regions = append(v.Regions, eviction.Region{Name: "disk", Kind: manifest.KindDisk, Size: s.DiskSize, ChunkSize: s.DiskBlock, Data: s.Disk()})
		}
		for _, r := range v.Regions {
			buf := make([]byte, r.ChunkSize)
			for off := int64(0); off < r.Size; off += int64(r.ChunkSize) {
				b := buf[:min(int64(r.ChunkSize), r.Size-off)]
				if _, err := r.Data.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
					return nil, err
				}
				res.VMBytes += int64(len(b))
				if chunk.IsZeroData(b) {
					continue
				}
				res.NonZeroBytes += int64(len(b))
				if id := chunk.Sum(b); !seen[id] {
					seen[id] = true
					res.UniqueBytes += int64(len(b))
				}
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// waitGatherer waits (virtual time) for the gather of migration id to
// start at sn.
func (c *Cluster) waitGatherer(ctx context.Context, sn *simNode, id wire.MigrationID) (*fetch.Gatherer, error) {
	for {
		if g := sn.roles.Gatherer(id); g != nil {
			return g, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// scheduleFaults fires the topology's faults at their times after start;
// the returned channel closes when it is done (all fired, or ctx ended).
// scheduleFaults fires the topology's faults at their times after start
// (or, AfterET, after evicted is closed: the eviction time); the returned
// channel closes when it is done (all fired, or ctx ended).
func (c *Cluster) scheduleFaults(ctx context.Context, start time.Time, evicted <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	type event struct {
		at time.Duration
		do func()
	}
	var evs, afterET []event
	for _, f := range c.topo.Faults {
		var e event
		if f.Kill != "" {
			i := c.topo.node(f.Kill)
			e = event{time.Duration(f.At), func() { c.Kill(i) }}
		} else {
			a, b := c.topo.node(f.Cut[0]), c.topo.node(f.Cut[1])
			e = event{time.Duration(f.At), func() { c.Cut(a, b) }}
		}
		if f.AfterET {
			afterET = append(afterET, e)
		} else {
			evs = append(evs, e)
		}
	}
	for _, ch := range c.topo.Latency.Changes {
		a, b, d := c.topo.node(ch.A), c.topo.node(ch.B), time.Duration(ch.OneWay)
		evs = append(evs, event{time.Duration(ch.At), func() { c.SetLatency(a, b, d) }})
	}
	fire := func(from time.Time, evs []event) {
		for len(evs) > 0 {
			next := 0
			for i, e := range evs {
				if e.at < evs[next].at {
					next = i
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(from.Add(evs[next].at))):
			}
			evs[next].do()
			evs = append(evs[:next], evs[next+1:]...)
		}
	}
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		wg.Go(func() { fire(start, evs) })
		if len(afterET) > 0 {
			wg.Go(func() {
				select {
				case <-evicted:
					fire(time.Now(), afterET)
				case <-ctx.Done():
				}
			})
		}
		wg.Wait()
	}()
	return done
}

func (c *Cluster) linkBytes() map[string]map[string]int64 {
	out := map[string]map[string]int64{}
	for _, sn := range c.nodes {
		m := map[string]int64{}
		for j, n := range sn.conn.sentTo() {
			if j >= 0 {
				m[c.nodes[j].spec.Name] = n
			}
		}
		out[sn.spec.Name] = m
	}
	return out
}

// holderBytes renames the gathers' per-peer byte counts by node name.
func (c *Cluster) holderBytes(reps []fetch.Report) map[string]int64 {
	names := map[string]string{}
	for _, sn := range c.nodes {
		names[sn.node.ID().String()] = sn.spec.Name
	}
	out := map[string]int64{}
	for _, r := range reps {
		for p, n := range r.FetchedBytes {
			name := names[p]
			if name == "" {
				name = p
			}
			out[name] += n
		}
	}
	return out
}

// verifyGathered reads every region of v through the gather and compares
// it with the source image.
func verifyGathered(ctx context.Context, g *fetch.Gatherer, v eviction.VM) error {
	for i, r := range v.Regions {
		const step = 1 << 20
		want, got := make([]byte, step), make([]byte, step)
		for off := int64(0); off < r.Size; off += step {
			n := int(min(step, r.Size-off))
			if _, err := r.Data.ReadAt(want[:n], off); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if _, err := g.ReadAt(ctx, i, got[:n], off); err != nil {
				return fmt.Errorf("verify %s/%s at %d: %w", v.Name, r.Name, off, err)
			}
			if !bytes.Equal(want[:n], got[:n]) {
				return fmt.Errorf("verify %s/%s: bytes at %d..%d differ from the source", v.Name, r.Name, off, off+int64(n))
			}
		}
	}
	return nil
}
