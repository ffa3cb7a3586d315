package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/eviction"
	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/node"
	"github.com/sgrelay/sg/internal/wire"
)

// Net adapts a node to the transport-free interfaces of eviction and
// fetch (eviction.Cluster, eviction.Network, fetch.GatherNet), which name
// peers by their string IDs.
type Net struct{ n *node.Node }

// NewNet returns n as eviction and fetch see it.
func NewNet(n *node.Node) Net { return Net{n} }

func (a Net) OpenPush(ctx context.Context, p string, h wire.Hold) (eviction.Pusher, error) {
	id, err := peer.Decode(p)
	if err != nil {
		return nil, fmt.Errorf("peer %q: %w", p, err)
	}
	return a.n.OpenPush(ctx, id, h)
}

// Renew tells holder p that the migration is still being gathered.
func (a Net) Renew(ctx context.Context, p string, id wire.MigrationID) error {
	pid, err := peer.Decode(p)
	if err != nil {
		return fmt.Errorf("peer %q: %w", p, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return a.n.Renew(ctx, pid, id)
}

func (a Net) OpenGet(ctx context.Context, p string, prio wire.Priority, window int) (fetch.Getter, error) {
	id, err := peer.Decode(p)
	if err != nil {
		return nil, fmt.Errorf("peer %q: %w", p, err)
	}
	return a.n.OpenGet(ctx, id, prio, window)
}

func (a Net) Have(ctx context.Context, p string, ids []chunk.ID) ([]bool, error) {
	id, err := peer.Decode(p)
	if err != nil {
		return nil, fmt.Errorf("peer %q: %w", p, err)
	}
	return a.n.Have(ctx, id, ids)
}

// Capacity asks the peer now (it doubles as a liveness check).
func (a Net) Capacity(ctx context.Context, p string) (eviction.Capacity, error) {
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

func (a Net) OpenMigration(ctx context.Context, dest string, o wire.Open) (eviction.Session, error) {
	id, err := peer.Decode(dest)
	if err != nil {
		return nil, fmt.Errorf("peer %q: %w", dest, err)
	}
	ms, err := a.n.OpenMigration(ctx, id, o)
	if err != nil {
		return nil, err
	}
	return session{ms}, nil
}

// session is a migration's control stream as eviction sees it: the
// destination's request for the manifest is eviction's sentinel.
type session struct{ *node.MigrationSession }

func (s session) Done(ctx context.Context, root chunk.ID, build bool) error {
	err := s.MigrationSession.Done(ctx, root, build)
	if errors.Is(err, node.ErrManifestNeeded) {
		return eviction.ErrManifestNeeded
	}
	return err
}

func (a Net) OpenDemand(ctx context.Context, p string, window int) (fetch.Demander, error) {
	id, err := peer.Decode(p)
	if err != nil {
		return nil, fmt.Errorf("peer %q: %w", p, err)
	}
	return a.n.OpenDemand(ctx, id, window)
}

func (a Net) RTT(p string) (time.Duration, bool) {
	id, err := peer.Decode(p)
	if err != nil {
		return 0, false
	}
	return a.n.RTT(id)
}

func (a Net) Zone(p string) string {
	id, err := peer.Decode(p)
	if err != nil {
		return ""
	}
	return a.n.PeerZone(id)
}

// Release tells a holder it may free a migration's chunks. Releasing to
// ourselves (the destination holds chunks too) ends our holds without
// deleting: the gathered chunks are left to GC, as the gather unpins them.
func (a Net) Release(ctx context.Context, p string, r wire.Release) error {
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
	_ eviction.Cluster = Net{}
	_ eviction.Network = Net{}
	_ fetch.GatherNet  = Net{}
)
