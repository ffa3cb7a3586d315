// Package nbdview exports a VM disk over NBD on a unix socket, served from
// the gather's demand path: QEMU's NBD client (or qemu-img, nbdcopy) can
// open the disk at the destination before it has arrived. Reads block only
// for chunks not yet here; writes go to the local copy, never back to the
// network.
//
// It speaks the fixed-newstyle handshake (NBD_OPT_EXPORT_NAME, _INFO, _GO,
// _LIST, _ABORT; other options are answered "unsupported") and simple
// replies for READ, WRITE, FLUSH and DISC, one request at a time per
// connection. Requests are capped at 32 MiB.
package nbdview

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
)

// Disk is what is exported: the gather's demand path for one region.
type Disk interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	WriteAt(ctx context.Context, p []byte, off int64) (int, error)
}

// Protocol constants (see the NBD protocol document).
const (
	nbdMagic        = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic        = 0x49484156454f5054 // "IHAVEOPT"
	repMagic        = 0x3e889045565a9
	requestMagic    = 0x25609513
	simpleReplyMagc = 0x67446698

	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	optExportName = 1
	optAbort      = 2
	optList       = 3
	optInfo       = 6
	optGo         = 7

	repAck        = 1
	repServer     = 2
	repInfo       = 3
	repErrUnsup   = 1<<31 | 1
	repErrUnknown = 1<<31 | 6

	infoExport = 0

	transHasFlags  = 1 << 0
	transSendFlush = 1 << 2

	cmdRead  = 0
	cmdWrite = 1
	cmdDisc  = 2
	cmdFlush = 3

	errPerm   = 1
	errIO     = 5
	errInval  = 22
	errNotSup = 95

	maxRequest = 32 << 20
	maxOption  = 64 << 10
)

// Server exports one disk under a name.
type Server struct {
	Name string
	Size int64
	Disk Disk
	Log  *slog.Logger

	wg    sync.WaitGroup
	conns atomic.Int64
}

// Conns is how many NBD clients are connected now; 0 means nothing uses
// the export.
func (s *Server) Conns() int64 { return s.conns.Load() }

// Serve accepts connections on ln until ctx ends or ln is closed; it waits
// for every connection to end before returning.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer s.wg.Wait()
	var conns sync.Map
	defer conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		conns.Store(c, true)
		s.conns.Add(1)
		s.wg.Add(1)
		go func() { // owned by Serve: it waits for wg
			defer s.wg.Done()
			defer s.conns.Add(-1)
			defer conns.Delete(c)
			defer c.Close()
			if err := s.serveConn(ctx, c); err != nil && !errors.Is(err, io.EOF) {
				s.Log.Debug("nbd connection ended", "export", s.Name, "err", err)
			}
		}()
	}
}

func (s *Server) serveConn(ctx context.Context, c net.Conn) error {
	r := bufio.NewReaderSize(c, 256<<10)
	w := bufio.NewWriterSize(c, 256<<10)
	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:], nbdMagic)
	binary.BigEndian.PutUint64(hello[8:], optMagic)
	binary.BigEndian.PutUint16(hello[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := w.Write(hello[:]); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	var cflags uint32
	if err := binary.Read(r, binary.BigEndian, &cflags); err != nil {
		return err
	}
	noZeroes := cflags&flagNoZeroes != 0
	for {
		var hdr [16]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return err
		}
		if binary.BigEndian.Uint64(hdr[:]) != optMagic {
			return errors.New("bad option magic")
		}
		opt := binary.BigEndian.Uint32(hdr[8:])
		n := binary.BigEndian.Uint32(hdr[12:])
		if n > maxOption {
			return fmt.Errorf("option %d of %d bytes", opt, n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(r, data); err != nil {
			return err
		}
		switch opt {
		case optExportName:
			var out [10 + 124]byte
			binary.BigEndian.PutUint64(out[:], uint64(s.Size))
			binary.BigEndian.PutUint16(out[8:], transHasFlags|transSendFlush)
			end := 10
			if !noZeroes {
				end = len(out)
			}
			if _, err := w.Write(out[:end]); err != nil {
				return err
			}
			if err := w.Flush(); err != nil {
				return err
			}
			return s.transmit(ctx, r, w)
		case optAbort:
			_ = reply(w, opt, repAck, nil)
			return io.EOF
		case optList:
			name := binary.BigEndian.AppendUint32(nil, uint32(len(s.Name)))
			if err := reply(w, opt, repServer, append(name, s.Name...)); err != nil {
				return err
			}
			if err := reply(w, opt, repAck, nil); err != nil {
				return err
			}
		case optInfo, optGo:
			if len(data) < 4 || int(binary.BigEndian.Uint32(data)) > len(data)-4 {
				if err := reply(w, opt, repErrUnsup, nil); err != nil {
					return err
				}
				continue
			}
			if name := string(data[4 : 4+binary.BigEndian.Uint32(data)]); name != "" && name != s.Name {
				if err := reply(w, opt, repErrUnknown, []byte("no such export")); err != nil {
					return err
				}
				continue
			}
			info := binary.BigEndian.AppendUint16(nil, infoExport)
			info = binary.BigEndian.AppendUint64(info, uint64(s.Size))
			info = binary.BigEndian.AppendUint16(info, transHasFlags|transSendFlush)
			if err := reply(w, opt, repInfo, info); err != nil {
				return err
			}
			if err := reply(w, opt, repAck, nil); err != nil {
				return err
			}
			if opt == optGo {
				return s.transmit(ctx, r, w)
			}
		default:
			if err := reply(w, opt, repErrUnsup, nil); err != nil {
				return err
			}
		}
	}
}

// inside reports whether n bytes at off lie within the export (written
// so that no sum can overflow: off comes from the client).
func (s *Server) inside(off, n int64) bool {
	return off >= 0 && n <= s.Size && off <= s.Size-n
}

func reply(w *bufio.Writer, opt, typ uint32, data []byte) error {
	var hdr [20]byte
	binary.BigEndian.PutUint64(hdr[:], repMagic)
	binary.BigEndian.PutUint32(hdr[8:], opt)
	binary.BigEndian.PutUint32(hdr[12:], typ)
	binary.BigEndian.PutUint32(hdr[16:], uint32(len(data)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	return w.Flush()
}

// transmit serves requests until DISC or an error.
func (s *Server) transmit(ctx context.Context, r *bufio.Reader, w *bufio.Writer) error {
	var buf []byte
	for {
		var req [28]byte
		if _, err := io.ReadFull(r, req[:]); err != nil {
			return err
		}
		if binary.BigEndian.Uint32(req[:]) != requestMagic {
			return errors.New("bad request magic")
		}
		typ := binary.BigEndian.Uint16(req[6:])
		handle := binary.BigEndian.Uint64(req[8:])
		off := int64(binary.BigEndian.Uint64(req[16:]))
		n := int64(binary.BigEndian.Uint32(req[24:]))
		if n > maxRequest {
			return fmt.Errorf("request of %d bytes (cap %d)", n, maxRequest)
		}
		var code uint32
		var payload []byte
		switch typ {
		case cmdRead:
			if !s.inside(off, n) {
				code = errInval
				break
			}
			buf = slices.Grow(buf[:0], int(n))[:n]
			if _, err := s.Disk.ReadAt(ctx, buf, off); err != nil && !errors.Is(err, io.EOF) {
				s.Log.Warn("nbd read", "export", s.Name, "offset", off, "err", err)
				code = errIO
				break
			}
			payload = buf
		case cmdWrite:
			buf = slices.Grow(buf[:0], int(n))[:n]
			if _, err := io.ReadFull(r, buf); err != nil {
				return err
			}
			if !s.inside(off, n) {
				code = errInval
				break
			}
			if _, err := s.Disk.WriteAt(ctx, buf, off); err != nil {
				s.Log.Warn("nbd write", "export", s.Name, "offset", off, "err", err)
				code = errIO
			}
		case cmdFlush:
		case cmdDisc:
			return io.EOF
		default:
			code = errNotSup
		}
		var rep [16]byte
		binary.BigEndian.PutUint32(rep[:], simpleReplyMagc)
		binary.BigEndian.PutUint32(rep[4:], code)
		binary.BigEndian.PutUint64(rep[8:], handle)
		if _, err := w.Write(rep[:]); err != nil {
			return err
		}
		if code == 0 && payload != nil {
			if _, err := w.Write(payload); err != nil {
				return err
			}
		}
		if r.Buffered() == 0 { // batch replies while requests keep coming
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
}
