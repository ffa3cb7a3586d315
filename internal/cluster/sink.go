package cluster

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/node"
	"github.com/sgrelay/sg/internal/wire"
)

// roleSink is the destination side of /sg/migrate: a migration opened
// here starts a gather at once, and its placements and manifest feed it.
type roleSink struct{ r *Roles }

func (s roleSink) OpenMigration(from peer.ID, o wire.Open) error {
	in, err := s.r.in.Open(from.String(), o)
	if err != nil {
		return err
	}
	if _, err = s.r.StartGather(in); err != nil {
		s.r.in.Remove(in.ID) // no gather: nothing would ever end it
	}
	return err
}

// Expecting implements node.MigrationExpecter: from opened migration id
// here, with these region bytes and chunk positions.
func (s roleSink) Expecting(from peer.ID, id wire.MigrationID) (bytes, positions int64, ok bool) {
	in, err := s.r.in.Get(id)
	if err != nil || in.Source != from.String() {
		return 0, 0, false
	}
	// Each region is at most 2^50 bytes and there are at most
	// wire.MaxRegions: the sums fit.
	for _, r := range in.Regions {
		bytes += int64(r.Size)
		positions += int64((r.Size + uint64(r.ChunkSize) - 1) / uint64(r.ChunkSize))
	}
	return bytes, positions, true
}

func (s roleSink) AddHolders(from peer.ID, id wire.MigrationID, hs []wire.Holder) error {
	return s.r.in.AddHolders(from.String(), id, hs)
}
func (s roleSink) AddPlacements(from peer.ID, id wire.MigrationID, ps []wire.Placement) error {
	return s.r.in.AddPlacements(from.String(), id, ps)
}
func (s roleSink) FinishMigration(from peer.ID, id wire.MigrationID, root chunk.ID, build bool) error {
	err := s.r.in.Finish(from.String(), id, root, build)
	if errors.Is(err, fetch.ErrManifestNeeded) {
		return fmt.Errorf("%w: %w", node.ErrManifestNeeded, err)
	}
	return err
}
func (s roleSink) AbandonMigration(from peer.ID, id wire.MigrationID, reason error) {
	s.r.in.Abandon(from.String(), id, reason)
	if s.r.cfg.OnAbandon == nil {
		return
	}
	if g := s.r.Gatherer(id); g != nil {
		s.r.cfg.OnAbandon(g.Incoming(), g)
	}
}

var (
	_ node.MigrationSink     = roleSink{}
	_ node.MigrationExpecter = roleSink{}
	_ node.DemandServer      = (*Roles)(nil)
	_ node.ReleaseHandler    = (*Roles)(nil)
)
