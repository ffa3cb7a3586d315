package simnet

import (
	"context"
	"fmt"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/cluster"
	"github.com/sgrelay/sg/internal/fetch"
	"github.com/sgrelay/sg/internal/seal"
)

// GatherManifest gathers an existing manifest at node at from the named
// holders, as `sgctl gather` does: the holders keep their copies.
// prefetch false fetches only what is read.
func (c *Cluster) GatherManifest(ctx context.Context, at string, root chunk.ID, prefetch bool, from ...string) (*fetch.Gatherer, error) {
	i := c.topo.node(at)
	if i < 0 {
		return nil, fmt.Errorf("no node named %q", at)
	}
	sn := c.nodes[i]
	var holders []fetch.Holder
	var peers []string
	for _, name := range from {
		j := c.topo.node(name)
		if j < 0 {
			return nil, fmt.Errorf("no node named %q", name)
		}
		p := c.nodes[j].node.ID().String()
		rtt, _ := cluster.NewNet(sn.node).RTT(p)
		holders = append(holders, fetch.Holder{Peer: p, RTT: rtt})
		peers = append(peers, p)
	}
	m, err := fetch.ResolveManifest(ctx, cluster.NewNet(sn.node), holders, sn.store, root, seal.Secret{})
	if err != nil {
		return nil, err
	}
	in, err := sn.roles.Incomings().OpenFromManifest(root, m, seal.Secret{}, peers)
	if err != nil {
		return nil, err
	}
	g, err := sn.roles.StartGather(in, func(g *fetch.GatherConfig) { g.NoRelease, g.Prefetch = true, prefetch })
	if err != nil {
		return nil, err
	}
	return g, sn.roles.Incomings().PlaceManifest(in, m, root)
}

// SetLatencyByName is SetLatency with node names.
func (c *Cluster) SetLatencyByName(a, b string, oneWay Duration) {
	c.SetLatency(c.topo.node(a), c.topo.node(b), time.Duration(oneWay))
}

// Run runs the topology's eviction and gather on a started cluster (see
// the package function Run).
func (c *Cluster) Run() (*Result, error) { return c.run() }

// PeerName maps a peer ID string to the node's name ("" if unknown).
func (c *Cluster) PeerName(p string) string {
	for _, sn := range c.nodes {
		if sn.node.ID().String() == p {
			return sn.spec.Name
		}
	}
	return ""
}
