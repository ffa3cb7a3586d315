package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/sgrelay/sg/internal/wire"
)

// ErrStreamClosed is returned by requests on a stream that has failed or
// been closed.
var ErrStreamClosed = errors.New("stream closed")

// answerFunc receives the answer to one request. The payload is valid only
// during the call. err is set if the stream failed before the answer came.
type answerFunc func(t wire.Type, payload []byte, err error)

// reqStream carries pipelined requests on one libp2p stream; answers come
// back in request order. Its reader goroutine is owned by the stream and
// ends when the stream is closed or fails; close waits for it.
type reqStream struct {
	s       network.Stream
	timeout time.Duration

	slots   chan struct{}   // one token per request in flight: the window
	pending chan answerFunc // callbacks in request order, len ≤ window

	wmu    sync.Mutex // orders writes with pending and guards buf, closed
	buf    []byte
	closed bool

	done chan struct{} // closed when the reader has returned
	err  error         // why the stream failed; read after done
}

func newReqStream(s network.Stream, window int, timeout time.Duration) *reqStream {
	rs := &reqStream{
		s:       s,
		timeout: timeout,
		slots:   make(chan struct{}, window),
		pending: make(chan answerFunc, window),
		done:    make(chan struct{}),
	}
	go rs.readAnswers()
	return rs
}

// send encodes a request with encode (into a buffer the stream owns), writes
// it, and arranges for answer to be called with the reply. It blocks while
// the window is full.
//
// answer is called exactly once, whatever happens: with the reply, or with
// the error that kept it from coming. An error from send itself only says
// the stream is unusable and nothing more should be sent on it; the
// request's fate is always reported through answer.
func (rs *reqStream) send(ctx context.Context, encode func(dst []byte) []byte, answer answerFunc) error {
	select {
	case rs.slots <- struct{}{}:
	case <-ctx.Done():
		answer(0, nil, ctx.Err())
		return ctx.Err()
	case <-rs.done:
		err := rs.failure()
		answer(0, nil, err)
		return err
	}
	rs.wmu.Lock()
	defer rs.wmu.Unlock()
	if rs.closed {
		<-rs.slots
		answer(0, nil, ErrStreamClosed)
		return ErrStreamClosed
	}
	rs.buf = encode(rs.buf[:0])
	rs.pending <- answer // cannot block: slots bounds pending
	_ = rs.s.SetWriteDeadline(time.Now().Add(rs.timeout))
	if _, err := rs.s.Write(rs.buf); err != nil {
		// The reader sees the reset and fails every pending answer,
		// including this one.
		rs.s.Reset()
		return fmt.Errorf("write request: %w", err)
	}
	return nil
}

func (rs *reqStream) readAnswers() {
	defer close(rs.done)
	r := wire.NewReader(rs.s, wire.MaxFrameSize)
	for answer := range rs.pending {
		if rs.err == nil {
			_ = rs.s.SetReadDeadline(time.Now().Add(rs.timeout))
			t, p, err := r.Next()
			if err != nil {
				rs.err = fmt.Errorf("read answer: %w", err)
				rs.s.Reset()
			} else {
				answer(t, p, nil)
				<-rs.slots
				continue
			}
		}
		answer(0, nil, rs.err)
		<-rs.slots
	}
}

func (rs *reqStream) failure() error {
	if rs.err != nil {
		return rs.err
	}
	return ErrStreamClosed
}

// close waits for every answer, then closes the stream. It returns the
// error that failed the stream, if any.
func (rs *reqStream) close() error {
	rs.wmu.Lock()
	if !rs.closed {
		rs.closed = true
		close(rs.pending)
		_ = rs.s.CloseWrite()
	}
	rs.wmu.Unlock()
	<-rs.done
	if rs.err != nil {
		return rs.err
	}
	return rs.s.Close()
}

// abort resets the stream: pending answers fail at once.
func (rs *reqStream) abort() {
	rs.s.Reset()
	rs.close()
}
