package simnet

import (
	"net"
	"sync/atomic"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	"github.com/marcopolo/simnet"
	"github.com/quic-go/quic-go"
	"go.uber.org/fx"
)

// fixedSourceIP answers quicreuse's "which source address for this
// destination" with the one address the simulated endpoint has.
type fixedSourceIP struct{ ip atomic.Pointer[net.IP] }

func (f *fixedSourceIP) PreferredSourceIPForDestination(*net.UDPAddr) (net.IP, error) {
	return *f.ip.Load(), nil
}

// simulatedQUIC makes libp2p's QUIC transport listen on a simulated
// endpoint instead of a UDP socket: every packet the node sends goes
// through wrap (loss, cuts) and then the simulated link. This is the
// wiring go-libp2p's x/simlibp2p uses, which imports testing and so
// cannot be imported from here.
func simulatedQUIC(wrap func(*net.UDPAddr, net.PacketConn) net.PacketConn, nw *simnet.Simnet, link simnet.NodeBiDiLinkSettings) libp2p.Option {
	src := &fixedSourceIP{}
	opts := []quicreuse.Option{
		quicreuse.OverrideSourceIPSelector(func() (quicreuse.SourceIPSelector, error) { return src, nil }),
		quicreuse.OverrideListenUDP(func(_ string, addr *net.UDPAddr) (net.PacketConn, error) {
			src.ip.Store(&addr.IP)
			return wrap(addr, nw.NewEndpoint(addr, link)), nil
		}),
	}
	return libp2p.QUICReuse(func(l fx.Lifecycle, reset quic.StatelessResetKey, tokens quic.TokenGeneratorKey, o ...quicreuse.Option) (*quicreuse.ConnManager, error) {
		cm, err := quicreuse.NewConnManager(reset, tokens, o...)
		if err != nil {
			return nil, err
		}
		// libp2p does not close a connection manager it was handed.
		l.Append(fx.StopHook(cm.Close))
		return cm, nil
	}, opts...)
}
