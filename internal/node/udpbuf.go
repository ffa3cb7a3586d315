package node

import (
	"net"

	"golang.org/x/sys/unix"
)

// quicUDPBuffer is the socket buffer quic-go asks for on each UDP socket
// it opens (its desiredBufferSize): a kernel that grants less drops
// packets in bursts at high rates, and the sender backs off.
const quicUDPBuffer = 7 << 20

// udpBuffers is what the kernel grants a UDP socket that asks for
// quicUDPBuffer both ways, as quic-go asks (plain, then forced, which
// needs CAP_NET_ADMIN). Zero means it could not be measured.
type udpBuffers struct{ recv, send int }

// enough says both directions got what quic-go wants.
func (b udpBuffers) enough() bool { return b.recv >= quicUDPBuffer && b.send >= quicUDPBuffer }

// probeUDPBuffers opens a throwaway loopback UDP socket and asks for
// quicUDPBuffer the way quic-go does, so the node can report what its
// QUIC sockets get: libp2p does not expose the sockets themselves.
func probeUDPBuffers() (udpBuffers, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return udpBuffers{}, err
	}
	defer c.Close()
	_ = c.SetReadBuffer(quicUDPBuffer)
	_ = c.SetWriteBuffer(quicUDPBuffer)
	rc, err := c.SyscallConn()
	if err != nil {
		return udpBuffers{}, err
	}
	var got udpBuffers
	var serr error
	cerr := rc.Control(func(fd uintptr) {
		get := func(opt, force int) int {
			n, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, opt)
			if err != nil {
				serr = err
				return 0
			}
			if n/2 < quicUDPBuffer { // Linux reports twice what it grants
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, force, quicUDPBuffer)
				if m, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, opt); err == nil {
					n = m
				}
			}
			return n / 2
		}
		got.recv = get(unix.SO_RCVBUF, unix.SO_RCVBUFFORCE)
		got.send = get(unix.SO_SNDBUF, unix.SO_SNDBUFFORCE)
	})
	if cerr != nil {
		return udpBuffers{}, cerr
	}
	return got, serr
}
