package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/wire"
)

// peersWait bounds how long a restarted node waits for peers holding an
// interrupted gather's manifest.
const peersWait = 2 * time.Minute

// resumeGathers continues every gather a previous run of this node left
// unfinished (killed, crashed, stopped): from the files it had written,
// fetching only what they lack. Runs once at start, in a goroutine the
// daemon owns.
func (d *Daemon) resumeGathers() {
	states, err := fetch.ReadGatherStates(filepath.Join(d.cfg.DataDir, "vms"))
	if err != nil {
		d.log.Error("some interrupted gathers cannot resume", "err", err)
	}
	for _, st := range states {
		if st.Complete {
			continue
		}
		if err := d.resumeGather(st); err != nil {
			d.log.Error("interrupted gather not resumed", "vm", st.VM, "manifest", st.Root, "dir", st.Dir, "err", err)
		}
	}
}

func (d *Daemon) resumeGather(st fetch.GatherState) error {
	root, err := chunk.Parse(st.Root)
	if err != nil {
		return err
	}
	secret, err := st.ManifestSecret()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(d.runCtx, peersWait)
	defer cancel()
	d.log.Info("resuming an interrupted gather", "vm", st.VM, "manifest", st.Root, "dir", st.Dir)
	// The manifest is at the holders that took most of the data; wait
	// for them to be connected again.
	var holders []fetch.Holder
	for {
		if holders, err = d.holdersOf(ctx, root); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no peer holds the manifest: %w", err)
		case <-time.After(time.Second):
		}
	}
	m, err := fetch.ResolveManifest(ctx, d.net, holders, d.store, root, secret)
	if err != nil {
		return err
	}
	// Chunks may be at peers that do not hold the manifest: ask every
	// connected peer, manifest holders first.
	var peers []string
	for _, h := range holders {
		peers = append(peers, h.Peer)
	}
	for _, h := range d.connectedPeers() {
		if !slices.Contains(peers, h.Peer) && len(peers) < wire.MaxHolders {
			peers = append(peers, h.Peer)
		}
	}
	in, err := d.roles.Incomings().OpenFromManifest(root, m, secret, peers)
	if err != nil {
		return err
	}
	// A guest that ran on this gather's views died with the old process;
	// starting it again from the state it was evicted with would roll it
	// back. The operator decides (the views are up).
	d.guests.noStartFor(in.ID)
	if _, err := d.roles.StartGather(in, func(c *fetch.GatherConfig) { c.Dir, c.Resume = st.Dir, true }); err != nil {
		return err
	}
	return d.roles.Incomings().PlaceManifest(in, m, root)
}
