package daemon

import (
	"context"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/eviction"
	"github.com/sgrelay/sg/fetch"
	"github.com/sgrelay/sg/internal/wire"
	"github.com/sgrelay/sg/node"
)

// nodeNetwork adapts node.Node to the transport-free interfaces of
// eviction and fetch, which name peers by their string IDs.
type nodeNetwork struct{ n *node.Node }

func (a nodeNetwork) OpenPush(ctx context.Context, p string) (eviction.Pusher, error) {
	id, err := peer.Decode(p)
	if err != nil {
		return nil, fmt.Errorf("peer %q: %w", p, err)
	}
	return a.n.OpenPush(ctx, id)
}

func (a nodeNetwork) OpenGet(ctx context.Context, p string, prio wire.Priority, window int) (fetch.Getter, error) {
	id, err := peer.Decode(p)
	if err != nil {
		return nil, fmt.Errorf("peer %q: %w", p, err)
	}
	return a.n.OpenGet(ctx, id, prio, window)
}

func decodePeer(s string) (peer.ID, error) { return peer.Decode(s) }
