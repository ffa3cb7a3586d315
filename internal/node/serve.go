package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/sgrelay/sg/internal/wire"
)

// answerer turns one request payload into the answer frame, appended to dst.
type answerer func(p peer.ID, payload, dst []byte) ([]byte, error)

// serveIdleFactor × RequestTimeout is how long a server waits for the next
// request on an idle stream before dropping it.
const serveIdleFactor = 10

// handler wraps a serve loop in the stream-owning shape: Reset on error,
// Close on success.
func (n *Node) handler(proto protocol.ID, want wire.Type, answer answerer) network.StreamHandler {
	return n.openedHandler(proto, nil, want, answer)
}

// opener takes a stream's first frame, which sets the stream up and is
// not answered; an error refuses the stream.
type opener struct {
	want wire.Type
	open func(p peer.ID, payload []byte) error
}

// openedHandler is handler for streams that begin with an opening frame
// (op nil: none).
func (n *Node) openedHandler(proto protocol.ID, op *opener, want wire.Type, answer answerer) network.StreamHandler {
	return func(s network.Stream) {
		if proto != ProtoInfo { // asking for the load is not load
			n.load.Add(1)
			defer n.load.Add(-1)
		}
		if err := n.serveRequests(s, op, want, answer); err != nil {
			n.m.protoErrors.WithLabelValues(string(proto)).Inc()
			if isOffence(err) {
				n.offence(s.Conn().RemotePeer(), err.Error())
			}
			n.log.Debug("stream ended with error", "protocol", proto, "peer", s.Conn().RemotePeer(), "err", err)
			s.Reset()
			return
		}
		s.Close()
	}
}

// serveRequests answers request frames of type want, in order, until the
// client closes its side. A malformed or unexpected frame gets an Error
// frame and ends the stream.
func (n *Node) serveRequests(s network.Stream, op *opener, want wire.Type, answer answerer) error {
	r := wire.NewReader(s, wire.MaxRequestFrame(want))
	from := s.Conn().RemotePeer()
	var out []byte
	if op != nil {
		_ = s.SetReadDeadline(time.Now().Add(n.cfg.RequestTimeout))
		t, payload, err := r.Next()
		if err != nil {
			return err
		}
		if t != op.want {
			n.refuse(s, wire.StatusRefused, fmt.Sprintf("expected %s, got %s", op.want, t))
			return fmt.Errorf("got %s: %w", t, wire.ErrUnexpected)
		}
		if err := op.open(from, payload); err != nil {
			n.refuse(s, wire.StatusRefused, err.Error())
			return err
		}
	}
	for {
		_ = s.SetReadDeadline(time.Now().Add(serveIdleFactor * n.cfg.RequestTimeout))
		t, payload, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if t != want {
			n.refuse(s, wire.StatusRefused, fmt.Sprintf("expected %s, got %s", want, t))
			return fmt.Errorf("got %s: %w", t, wire.ErrUnexpected)
		}
		out, err = answer(from, payload, out[:0])
		if err != nil {
			n.refuse(s, wire.StatusRefused, err.Error())
			return err
		}
		_ = s.SetWriteDeadline(time.Now().Add(n.cfg.RequestTimeout))
		if _, err := s.Write(out); err != nil {
			return fmt.Errorf("write answer: %w", err)
		}
	}
}

func (n *Node) refuse(s network.Stream, code wire.Status, msg string) {
	_ = s.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = s.Write(wire.AppendError(nil, code, msg))
}

// call sends one request to p on a new stream and hands the answer payload
// of type want to decode.
func (n *Node) call(ctx context.Context, p peer.ID, proto protocol.ID, encode func([]byte) []byte,
	want wire.Type, decode func(payload []byte) error) error {
	s, err := n.host.NewStream(ctx, p, proto)
	if err != nil {
		return fmt.Errorf("open %s to %s: %w", proto, p, err)
	}
	rs := newReqStream(s, 1, n.cfg.RequestTimeout)
	// The answer is awaited under the read deadline; the caller's context
	// may end sooner (a peer that went silent): reset the stream then.
	stop := context.AfterFunc(ctx, rs.abort)
	defer stop()
	var aerr error
	if err := rs.send(ctx, encode, func(t wire.Type, payload []byte, err error) {
		if err == nil {
			err = expect(t, payload, want)
		}
		if err == nil {
			err = decode(payload)
		}
		aerr = err
	}); err != nil {
		rs.abort()
		return fmt.Errorf("%s to %s: %w", proto, p, err)
	}
	if err := rs.close(); err != nil && aerr == nil {
		aerr = err
	}
	if aerr != nil {
		return fmt.Errorf("%s to %s: %w", proto, p, aerr)
	}
	return nil
}

// expect checks an answer's type; an Error frame becomes a *wire.RemoteError.
func expect(t wire.Type, payload []byte, want wire.Type) error {
	if t == want {
		return nil
	}
	if t == wire.TypeError {
		re, err := wire.DecodeError(payload)
		if err != nil {
			return err
		}
		return re
	}
	return fmt.Errorf("got %s, want %s: %w", t, want, wire.ErrUnexpected)
}
