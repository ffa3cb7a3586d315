package nbdview

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"testing"
	"time"
)

// clientBytes is what a client sends: the handshake (export name) and
// then requests (type, offset, length, and for writes the data).
func clientBytes(reqs ...[3]uint64) []byte {
	b := binary.BigEndian.AppendUint32(nil, flagFixedNewstyle|flagNoZeroes)
	b = binary.BigEndian.AppendUint64(b, optMagic)
	b = binary.BigEndian.AppendUint32(b, optExportName)
	b = binary.BigEndian.AppendUint32(b, 5)
	b = append(b, "disk0"...)
	for i, r := range reqs {
		b = binary.BigEndian.AppendUint32(b, requestMagic)
		b = binary.BigEndian.AppendUint16(b, 0)
		b = binary.BigEndian.AppendUint16(b, uint16(r[0]))
		b = binary.BigEndian.AppendUint64(b, uint64(i))
		b = binary.BigEndian.AppendUint64(b, r[1])
		b = binary.BigEndian.AppendUint32(b, uint32(r[2]))
		if r[0] == cmdWrite {
			b = append(b, make([]byte, r[2])...)
		}
	}
	return b
}

// FuzzSession plays arbitrary client bytes against the server: it must
// end the session (not hang), never touch the disk outside the export
// (memDisk panics), and never panic.
func FuzzSession(f *testing.F) {
	f.Add(clientBytes([3]uint64{cmdRead, 0, 4096}, [3]uint64{cmdWrite, 8192, 512}, [3]uint64{cmdFlush, 0, 0}, [3]uint64{cmdDisc, 0, 0}))
	f.Add(clientBytes([3]uint64{cmdRead, 1<<63 - 100, 4096}))
	f.Add(clientBytes([3]uint64{cmdWrite, 1<<64 - 512, 512}))
	f.Add(clientBytes([3]uint64{9, 0, 1}))
	opt := binary.BigEndian.AppendUint32(nil, flagFixedNewstyle)
	opt = binary.BigEndian.AppendUint64(opt, optMagic)
	opt = binary.BigEndian.AppendUint32(opt, optList)
	opt = binary.BigEndian.AppendUint32(opt, 0)
	f.Add(opt)
	f.Fuzz(func(t *testing.T, in []byte) {
		s := &Server{Name: "disk0", Size: 64 << 10, Disk: &memDisk{b: make([]byte, 64<<10)}}
		s.Log = slog.New(slog.DiscardHandler)
		done := make(chan error, 1)
		go func() { done <- s.serveConn(context.Background(), &scriptConn{in: bytes.NewReader(in)}) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("session did not end after the client's bytes ran out")
		}
	})
}

// scriptConn is a client that sends in, then half-closes, and ignores
// every answer.
type scriptConn struct {
	net.Conn // nil: only Read and Write are used
	in       *bytes.Reader
}

func (c *scriptConn) Read(p []byte) (int, error)  { return c.in.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error) { return len(p), nil }
