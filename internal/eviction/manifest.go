package eviction

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/wire"
)

// buildManifest builds a VM's manifest tree from the chunks at its
// positions (and its stripes) and records its root and size.
func (e *Eviction) buildManifest(v *vmState) error {
	regions := make([]manifest.Region, len(v.Regions))
	for i, r := range v.Regions {
		regions[i] = manifest.Region{Name: r.Name, Kind: r.Kind, Size: r.Size, ChunkSize: r.ChunkSize}
	}
	if e.destBuilds(v) {
		// The very tree the destination builds from the placements.
		root, nodes, err := manifest.BuildTree(v.Name, regions, v.ids)
		if err != nil {
			return err
		}
		v.manifest, v.res.Root, v.res.ManifestBytes = nodes, root, manifestSize(nodes)
		return nil
	}
	m := manifest.Manifest{Name: v.Name, Sealed: e.cfg.Seal}
	var nodes []manifest.Node
	for i := range regions {
		mr := &regions[i]
		var ns []manifest.Node
		var err error
		if e.cfg.Seal {
			ns, err = manifest.BuildSealed(mr, i, v.ids[i], v.plains[i], v.secret)
		} else {
			ns, err = manifest.Build(mr, v.ids[i])
		}
		if err != nil {
			return err
		}
		nodes = append(nodes, ns...)
		m.Regions = append(m.Regions, *mr)
	}
	for _, nd := range manifest.BuildStripes(v.stripes) {
		nodes = append(nodes, nd)
		m.StripeBlocks = append(m.StripeBlocks, nd.ID)
	}
	rootData := m.Encode()
	root := chunk.Sum(rootData)
	nodes = append(nodes, manifest.Node{ID: root, Data: rootData})
	v.manifest, v.res.Root, v.res.ManifestBytes = nodes, root, manifestSize(nodes)
	return nil
}

// destBuilds reports whether the destination builds v's manifest from the
// placements rather than be sent it: not when it is sealed (its key
// blocks need the plain IDs in order, which the source has) or striped
// (the stripes are not placed).
func (e *Eviction) destBuilds(v *vmState) bool {
	return !e.cfg.Seal && len(v.stripes) == 0
}

func manifestSize(nodes []manifest.Node) int64 {
	var n int64
	for _, nd := range nodes {
		n += int64(len(nd.Data))
	}
	return n
}

// manifestBuilders lists the targets that build v's manifest themselves
// (destBuilds): none, or the destination.
func (sc *scheduler) manifestBuilders(v *vmState) []*target {
	if !sc.e.destBuilds(v) {
		return nil
	}
	return []*target{sc.targets[destIndex]}
}

// handOver tells the destination v's manifest root. A destination counted
// as building the manifest is asked to; if its placements do not build
// that root (they always should), it is sent the manifest after all.
func (e *Eviction) handOver(ctx context.Context, sc *scheduler, v *vmState) error {
	build := slices.Contains(v.manifestAt, sc.targets[destIndex]) && len(sc.manifestBuilders(v)) > 0
	err := v.session.Done(ctx, v.res.Root, build)
	if !errors.Is(err, ErrManifestNeeded) {
		return err
	}
	e.log.Warn("destination could not build the manifest; sending it", "vm", v.Name)
	chunks := make([]wire.Chunk, len(v.manifest))
	for i, n := range v.manifest {
		chunks[i] = wire.Chunk{ID: n.ID, Data: n.Data}
	}
	if err := pushNow(ctx, e.cl, e.cfg.Dest, e.hold(), chunks, e.cfg.BatchBytes); err != nil {
		return err
	}
	sc.manifestPushed.Add(manifestSize(v.manifest))
	return v.session.Done(ctx, v.res.Root, false)
}

// pushManifest stores manifest nodes at live targets until as many hold
// them as hold the data (Replicas, or any parity of its stripes plus one),
// counting those in held that are still alive, and returns the targets
// holding them. The quickest targets (measured rate; the destination wins
// ties, so a direct eviction stores it there) are tried first; one whose
// push fails is passed over for the next.
func (sc *scheduler) pushManifest(ctx context.Context, nodes []manifest.Node, held []*target) ([]*target, error) {
	chunks := make([]wire.Chunk, len(nodes))
	var size int64
	for i, n := range nodes {
		chunks[i] = wire.Chunk{ID: n.ID, Data: n.Data}
		size += int64(len(n.Data))
	}
	copies := max(sc.e.cfg.Replicas, sc.e.cfg.Redundancy.Parity+1)
	sc.led.mu.Lock()
	var have, candidates []*target
	for _, t := range sc.targets {
		switch {
		case t.dead:
		case slices.Contains(held, t):
			have = append(have, t)
		case !t.full:
			candidates = append(candidates, t)
		}
	}
	slices.SortStableFunc(candidates, func(a, b *target) int { return cmp.Compare(b.rate, a.rate) })
	sc.led.mu.Unlock()
	var lastErr error
	for _, t := range candidates {
		if len(have) >= copies {
			break
		}
		if err := pushNow(ctx, sc.e.cl, t.peer, sc.e.hold(), chunks, sc.e.cfg.BatchBytes); err != nil {
			if ctx.Err() != nil {
				return have, ctx.Err()
			}
			sc.e.log.Warn("manifest not stored; trying another target", "peer", t.peer, "err", err)
			lastErr = err
			continue
		}
		t.sent.Add(size)
		sc.manifestPushed.Add(size)
		sc.led.mu.Lock()
		t.landed = time.Now() // checked again if it was already
		sc.led.mu.Unlock()
		have = append(have, t)
	}
	if len(have) < copies {
		if lastErr == nil {
			lastErr = errors.New("no other live target")
		}
		return have, fmt.Errorf("manifest stored on %d live targets of the %d needed: %w", len(have), copies, lastErr)
	}
	return have, nil
}

// pushNow pushes chunks to one peer on a new stream and waits for every ack.
func pushNow(ctx context.Context, net Network, peer string, h wire.Hold, chunks []wire.Chunk, batchBytes int) error {
	ps, err := net.OpenPush(ctx, peer, h)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var failed error
	for len(chunks) > 0 {
		n, size := 0, 0
		for n < len(chunks) && (n == 0 || size+len(chunks[n].Data) <= batchBytes) && n < wire.MaxBatch {
			size += len(chunks[n].Data)
			n++
		}
		part := chunks[:n]
		chunks = chunks[n:]
		err := ps.Push(ctx, part, func(st []wire.Status, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				for i, s := range st {
					if s != wire.StatusOK {
						err = fmt.Errorf("%s refused chunk %s: %s: %w", peer, part[i].ID.Short(), s, ErrRejected)
						break
					}
				}
			}
			if err != nil && failed == nil {
				failed = err
			}
		})
		if err != nil {
			ps.Abort()
			return err
		}
	}
	if err := ps.Close(); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	return failed
}
