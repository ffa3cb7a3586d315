package simnet

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

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

// spareSocket lets quic-go discover the path MTU over a simulated link as
// it does over a real UDP socket. quic-go probes packets larger than its
// 1280-byte floor only where it can set the don't-fragment bit, which it
// does through the connection's SyscallConn; a simulated endpoint has no
// socket, so it lends quic-go a real one that carries nothing (unbound,
// never read or written) for those socket options. Over the simulated
// links, which carry 1500-byte packets, quic-go then searches up to 1452
// bytes as it would on a real host (it settles about 1436: its search
// stops within 20 bytes of the limit).
type spareSocket struct {
	fd   int
	once sync.Once
}

func newSpareSocket() (*spareSocket, error) {
	fd, err := syscall.Socket(syscall.AF_INET6, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("simnet: a socket for quic-go's socket options: %w", err)
	}
	return &spareSocket{fd: fd}, nil
}

// Control runs f on the spare socket: quic-go sets and reads options there.
func (s *spareSocket) Control(f func(fd uintptr)) error {
	f(uintptr(s.fd))
	return nil
}

// Read and Write are refused: packets go over the simulated link only.
func (s *spareSocket) Read(func(fd uintptr) bool) error  { return errors.ErrUnsupported }
func (s *spareSocket) Write(func(fd uintptr) bool) error { return errors.ErrUnsupported }

func (s *spareSocket) close() {
	s.once.Do(func() { _ = syscall.Close(s.fd) })
}
