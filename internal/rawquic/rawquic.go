// Package rawquic measures plain quic-go throughput: the baseline that sg's
// own transfer rates are reported against, measured in the same run. It
// uses the flow-control windows go-libp2p gives quic-go, so the comparison
// isolates sg's overhead (framing, hashing, storing, acks) from QUIC's.
package rawquic

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"time"

	"github.com/quic-go/quic-go"
)

const alpn = "sg-rawquic"

// quicConfig mirrors go-libp2p's QUIC windows (quicreuse.DefaultQUICConfig).
func quicConfig() *quic.Config {
	return &quic.Config{
		MaxStreamReceiveWindow:     10 << 20,
		MaxConnectionReceiveWindow: 15 << 20,
		MaxIdleTimeout:             30 * time.Second,
	}
}

// Server receives streams and discards their bytes, answering each stream
// with the byte count once the sender closes it.
type Server struct {
	ln *quic.Listener
}

// Listen starts a server on a UDP address such as "127.0.0.1:0".
func Listen(addr string) (*Server, error) {
	cert, err := selfSigned()
	if err != nil {
		return nil, err
	}
	ln, err := quic.ListenAddr(addr, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{alpn}}, quicConfig())
	if err != nil {
		return nil, fmt.Errorf("rawquic listen: %w", err)
	}
	return &Server{ln: ln}, nil
}

// Addr is the address to Send to.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve accepts connections until ctx ends or the server is closed.
// It returns nil on cancellation.
func (s *Server) Serve(ctx context.Context) error {
	for {
		conn, err := s.ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go serveConn(ctx, conn) // ends when conn closes
	}
}

func serveConn(ctx context.Context, conn *quic.Conn) {
	for {
		st, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		go func() { // ends when the sender closes the stream
			n, _ := io.Copy(io.Discard, st)
			_ = binary.Write(st, binary.BigEndian, uint64(n))
			st.Close()
		}()
	}
}

// Close stops the server.
func (s *Server) Close() error { return s.ln.Close() }

// Send pushes total bytes to addr over streams parallel streams and waits
// until the server confirms it read them all. It returns the elapsed time.
func Send(ctx context.Context, addr string, total int64, streams int) (time.Duration, error) {
	conn, err := quic.DialAddr(ctx, addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{alpn}}, quicConfig())
	if err != nil {
		return 0, fmt.Errorf("rawquic dial %s: %w", addr, err)
	}
	defer conn.CloseWithError(0, "")
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	start := time.Now()
	errs := make(chan error, streams)
	per := total / int64(streams)
	for range streams {
		go func() { errs <- sendStream(ctx, conn, buf, per) }() // joined below
	}
	for range streams {
		if err := <-errs; err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

func sendStream(ctx context.Context, conn *quic.Conn, buf []byte, n int64) error {
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	for left := n; left > 0; {
		k := min(left, int64(len(buf)))
		if _, err := st.Write(buf[:k]); err != nil {
			return err
		}
		left -= k
	}
	st.Close()
	var got uint64
	if err := binary.Read(st, binary.BigEndian, &got); err != nil {
		return fmt.Errorf("rawquic: read confirmation: %w", err)
	}
	if int64(got) != n {
		return fmt.Errorf("rawquic: server read %d of %d bytes", got, n)
	}
	return nil
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
