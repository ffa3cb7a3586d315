package node

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/eviction"
	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/wire"
)

// Cluster adapts a Node to the transport-free interfaces of eviction and
// fetch (eviction.Cluster, eviction.Network, fetch.GatherNet), which name
// peers by their string IDs.
type Cluster struct{ n *Node }

// Cluster returns n as eviction and fetch see it.
func (n *Node) Cluster() Cluster { return Cluster{n} }

func (a Cluster) OpenPush(ctx context.Context, p string, h wire.Hold) (eviction.Pusher, error) {
	id, err := peer.Decode(p)
	if err != nil {
		return nil, fmt.Errorf("peer %q: %w", p, err)
	}
	return a.n.OpenPush(ctx, id, h)
}

// Renew tells holder p that the migration is still being gathered.
// Renewing at ourselves extends our own holds directly.
func (a Cluster) Renew(ctx context.Context, p string, id wire.MigrationID) error {
	pid, err := peer.Decode(p)
	if err != nil {
		return fmt.Errorf("peer %q: %w", p, err)
	}
	if pid == a.n.ID() {
		a.n.holds.renew(pid, id)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return a.n.Renew(ctx, pid, id)
}

func (a Cluster) OpenGet(ctx context.Context, p string, prio wire.Priority, window int) (fetch.Getter, error) {
	id, err := peer.Decode(p)
	if err != nil {
		return nil, fmt.Errorf("peer %q: %w", p, err)
	}
	return a.n.OpenGet(ctx, id, prio, window)
}

func (a Cluster) Have(ctx context.Context, p string, ids []chunk.ID) ([]bool, error) {
	id, err := peer.Decode(p)
	if err != nil {
		return nil, fmt.Errorf("peer %q: %w", p, err)
	}
	return a.n.Have(ctx, id, ids)
}

// Capacity asks the peer now (it doubles as a liveness check).
func (a Cluster) Capacity(ctx context.Context, p string) (eviction.Capacity, error) {
	id, err := peer.Decode(p)
	if err != nil {
		return eviction.Capacity{}, fmt.Errorf("peer %q: %w", p, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	in, err := a.n.Info(ctx, id)
	if err != nil {
		return eviction.Capacity{}, err
	}
	c := eviction.Capacity{Free: int64(min(in.MemFree+in.DiskFree, 1<<62)), Downlink: int64(min(in.Downlink, 1<<62)), Chunks: -1}
	if in.ChunksKnown {
		c.Chunks = int64(min(in.Chunks, 1<<62))
	}
	return c, nil
}

func (a Cluster) OpenMigration(ctx context.Context, dest string, o wire.Open) (eviction.Session, error) {
	id, err := peer.Decode(dest)
	if err != nil {
		return nil, fmt.Errorf("peer %q: %w", dest, err)
	}
	return a.n.OpenMigration(ctx, id, o)
}

func (a Cluster) OpenDemand(ctx context.Context, p string, window int) (fetch.Demander, error) {
	id, err := peer.Decode(p)
	if err != nil {
		return nil, fmt.Errorf("peer %q: %w", p, err)
	}
	return a.n.OpenDemand(ctx, id, window)
}

func (a Cluster) RTT(p string) (time.Duration, bool) {
	id, err := peer.Decode(p)
	if err != nil {
		return 0, false
	}
	return a.n.RTT(id)
}

func (a Cluster) Zone(p string) string {
	id, err := peer.Decode(p)
	if err != nil {
		return ""
	}
	return a.n.PeerZone(id)
}

// Release tells a holder it may free a migration's chunks. Releasing to
// ourselves (the destination holds chunks too) ends our holds without
// deleting: the gathered chunks are left to GC, as the gather unpins them.
func (a Cluster) Release(ctx context.Context, p string, r wire.Release) error {
	id, err := peer.Decode(p)
	if err != nil {
		return fmt.Errorf("peer %q: %w", p, err)
	}
	if id == a.n.ID() {
		_, err := a.n.ReleaseHeld(id, r.ID, false)
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return a.n.Release(ctx, id, r)
}

var (
	_ eviction.Cluster = Cluster{}
	_ eviction.Network = Cluster{}
	_ fetch.GatherNet  = Cluster{}
)
