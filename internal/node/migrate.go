package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/wire"
)

// ProtoMigrate carries migration control (source → destination) and
// positional demand reads (destination → source).
const ProtoMigrate protocol.ID = "/sg/migrate/2"

// MigrationSink receives migrations opened to this node (the destination).
// An error refuses the frame and ends the session.
type MigrationSink interface {
	OpenMigration(from peer.ID, o wire.Open) error
	AddHolders(from peer.ID, id wire.MigrationID, hs []wire.Holder) error
	AddPlacements(from peer.ID, id wire.MigrationID, ps []wire.Placement) error
	// FinishMigration takes the manifest root. With build, the sink is
	// to build the manifest from the placements; an error wrapping
	// ErrManifestNeeded asks the source to send it instead (the session
	// goes on).
	FinishMigration(from peer.ID, id wire.MigrationID, root chunk.ID, build bool) error
	// AbandonMigration: the source's control stream ended before it
	// handed over the manifest (the eviction failed, or the source died).
	AbandonMigration(from peer.ID, id wire.MigrationID, reason error)
}

// DemandServer answers positional demand reads (the source). It appends
// the chunk to dst.
type DemandServer interface {
	ServeDemand(from peer.ID, d wire.DemandReq, dst []byte) ([]byte, wire.Status)
}

// ReleaseHandler frees what a finished migration no longer needs (a
// holder, or the source). It returns how many chunks it freed.
type ReleaseHandler interface {
	Release(from peer.ID, r wire.Release) (int, error)
}

type migrationHandlers struct {
	mu      sync.RWMutex
	sink    MigrationSink
	demand  DemandServer
	release ReleaseHandler
}

// SetReleaseHandler installs what handles releases; nil refuses them.
func (n *Node) SetReleaseHandler(h ReleaseHandler) {
	n.mig.mu.Lock()
	n.mig.release = h
	n.mig.mu.Unlock()
}

// Release tells p that migration r.ID is complete and which of its chunks
// p held; it returns once p has acted on it.
func (n *Node) Release(ctx context.Context, p peer.ID, r wire.Release) error {
	for first := true; first || len(r.Chunks) > 0; first = false {
		part := wire.Release{ID: r.ID, Chunks: r.Chunks[:min(len(r.Chunks), wire.MaxBatch)]}
		r.Chunks = r.Chunks[len(part.Chunks):]
		err := n.call(ctx, p, ProtoMigrate, func(b []byte) []byte { return wire.AppendRelease(b, part) },
			wire.TypeAck, func(payload []byte) error {
				st, msg, err := wire.DecodeAck(payload)
				if err == nil && st != wire.StatusOK {
					err = &wire.RemoteError{Code: st, Message: msg}
				}
				return err
			})
		if err != nil {
			return err
		}
	}
	return nil
}

// ReleaseHeld ends, for the destination from, migration id in the holds
// that name it, and deletes the chunks no hold keeps any more (del false:
// only stops keeping them). A release from any other peer frees nothing.
// It returns how many chunks it deleted.
func (n *Node) ReleaseHeld(from peer.ID, id wire.MigrationID, del bool) (int, error) {
	freed, err := n.holds.release(from, id, del)
	n.forgetFreed(freed)
	return len(freed), err
}

// RemovePut ends from's put id here and deletes the chunks no hold keeps
// any more; it returns how many it deleted.
func (n *Node) RemovePut(from peer.ID, id wire.MigrationID) (int, error) {
	freed, found, err := n.holds.remove(from, id)
	n.forgetFreed(freed)
	if err == nil && !found {
		err = fmt.Errorf("no put %s from this peer here", id)
	}
	return len(freed), err
}

// Renew tells holder p that this node still gathers migration id, so p
// keeps its chunks for another lease. Renewing at n itself (a
// destination holds chunks too) extends its own holds directly.
func (n *Node) Renew(ctx context.Context, p peer.ID, id wire.MigrationID) error {
	if p == n.ID() {
		n.holds.renew(p, id)
		return nil
	}
	return n.callAck(ctx, p, func(b []byte) []byte { return wire.AppendRenew(b, id) })
}

// Remove tells p to drop this node's put id.
func (n *Node) Remove(ctx context.Context, p peer.ID, id wire.MigrationID) error {
	return n.callAck(ctx, p, func(b []byte) []byte { return wire.AppendRemove(b, id) })
}

// callAck sends one /sg/migrate request answered by an Ack.
func (n *Node) callAck(ctx context.Context, p peer.ID, encode func([]byte) []byte) error {
	return n.call(ctx, p, ProtoMigrate, encode, wire.TypeAck, func(payload []byte) error {
		st, msg, err := wire.DecodeAck(payload)
		if err == nil && st != wire.StatusOK {
			err = &wire.RemoteError{Code: st, Message: msg}
		}
		return err
	})
}

// SetMigrationSink installs the destination side; nil refuses migrations.
func (n *Node) SetMigrationSink(s MigrationSink) {
	n.mig.mu.Lock()
	n.mig.sink = s
	n.mig.mu.Unlock()
}

// SetDemandServer installs the source side; nil refuses demand reads.
func (n *Node) SetDemandServer(d DemandServer) {
	n.mig.mu.Lock()
	n.mig.demand = d
	n.mig.mu.Unlock()
}

func (n *Node) handleMigrate(s network.Stream) {
	n.load.Add(1)
	defer n.load.Add(-1)
	if err := n.serveMigrate(s); err != nil {
		n.m.protoErrors.WithLabelValues(string(ProtoMigrate)).Inc()
		if errors.Is(err, errOpenRefused) {
			// Closed, not reset, so that the refusal reaches the source.
			n.log.Debug("migration refused", "peer", s.Conn().RemotePeer(), "err", err)
			s.Close()
			return
		}
		n.log.Debug("migrate stream ended with error", "peer", s.Conn().RemotePeer(), "err", err)
		s.Reset()
		return
	}
	s.Close()
}

// serveMigrate dispatches on the first frame: Open starts a control
// session, Demand a demand session.
func (n *Node) serveMigrate(s network.Stream) error {
	from := s.Conn().RemotePeer()
	r := wire.NewReader(s, wire.MaxFrameSize)
	_ = s.SetReadDeadline(time.Now().Add(n.cfg.RequestTimeout))
	t, p, err := r.Next()
	if err != nil {
		return err
	}
	n.mig.mu.RLock()
	sink, demand, release := n.mig.sink, n.mig.demand, n.mig.release
	n.mig.mu.RUnlock()
	switch t {
	case wire.TypeMigrateOpen:
		if sink == nil {
			n.refuse(s, wire.StatusRefused, "this node does not accept migrations")
			return errors.New("migration refused: no sink")
		}
		return n.serveControl(s, r, from, sink, p)
	case wire.TypeDemand:
		if demand == nil {
			n.refuse(s, wire.StatusRefused, "this node serves no demand reads")
			return errors.New("demand refused: no server")
		}
		return n.serveDemand(s, r, from, demand, p)
	case wire.TypeRelease:
		rel, err := wire.DecodeRelease(p)
		if err == nil && release == nil {
			err = errors.New("this node takes no releases")
		}
		if err != nil {
			return n.ack(s, err)
		}
		_, err = release.Release(from, rel)
		return n.answer(s, err)
	case wire.TypeRenew:
		id, err := wire.DecodeHoldID(p)
		if err != nil {
			return n.ack(s, err)
		}
		n.holds.renew(from, id)
		return n.answer(s, nil)
	case wire.TypeRemove:
		id, err := wire.DecodeHoldID(p)
		if err != nil {
			return n.ack(s, err)
		}
		_, err = n.RemovePut(from, id)
		return n.answer(s, err)
	}
	n.refuse(s, wire.StatusRefused, "expected open, demand, release, renew or remove, got "+t.String())
	return fmt.Errorf("first migrate frame %s: %w", t, wire.ErrUnexpected)
}

func (n *Node) serveControl(s network.Stream, r *wire.Reader, from peer.ID, sink MigrationSink, first []byte) error {
	o, err := wire.DecodeOpen(first)
	if err == nil {
		err = sink.OpenMigration(from, o)
	}
	if err != nil {
		_ = n.ack(s, err)
		return fmt.Errorf("%w: %w", errOpenRefused, err)
	}
	if err := n.ack(s, nil); err != nil {
		return err
	}
	done := false
	res := newPushResolver(n, from, o.ID, sink)
	defer func() {
		res.close()
		if !done {
			sink.AbandonMigration(from, o.ID, errAbandoned)
		}
	}()
	var ps []wire.Placement
	var pps []wire.PushPlacement
	for {
		_ = s.SetReadDeadline(time.Now().Add(serveIdleFactor * n.cfg.RequestTimeout))
		t, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch t {
		case wire.TypeHolders:
			var hs []wire.Holder
			if hs, err = wire.DecodeHolders(p); err == nil {
				if err = sink.AddHolders(from, o.ID, hs); err == nil {
					res.setHolders(hs)
				}
			}
		case wire.TypePlacements, wire.TypeSealedPlacements:
			if sealed := t == wire.TypeSealedPlacements; sealed != o.Sealed() {
				err = fmt.Errorf("migration control: %s on a migration with sealed=%v: %w", t, o.Sealed(), wire.ErrUnexpected)
			} else if ps, err = wire.DecodePlacements(p, ps, sealed); err == nil {
				err = sink.AddPlacements(from, o.ID, ps)
			}
		case wire.TypePushPlacements:
			if o.Sealed() {
				err = fmt.Errorf("migration control: %s on a sealed migration: %w", t, wire.ErrUnexpected)
			} else if pps, err = wire.DecodePushPlacements(p, pps); err == nil {
				res.add(pps)
			}
		case wire.TypeAbort:
			var reason string
			if reason, err = wire.DecodeAbort(p); err == nil {
				// Answered once the destination has given it up (and
				// stopped a guest it had started from it).
				sink.AbandonMigration(from, o.ID, fmt.Errorf("%w: %s", errSourceAborted, reason))
				done = true
			}
		case wire.TypeMigrateDone:
			var root chunk.ID
			var build bool
			if root, build, err = wire.DecodeDone(p); err == nil {
				res.wait() // everything placed before Done is placed
				err = sink.FinishMigration(from, o.ID, root, build)
			}
			if errors.Is(err, ErrManifestNeeded) {
				// Not a failure: the source sends the manifest and
				// says Done again.
				_ = s.SetWriteDeadline(time.Now().Add(n.cfg.RequestTimeout))
				if _, werr := s.Write(wire.AppendAck(nil, wire.StatusMissing, err.Error())); werr != nil {
					return werr
				}
				continue
			}
			done = err == nil
		default:
			err = fmt.Errorf("migration control: got %s: %w", t, wire.ErrUnexpected)
		}
		if aerr := n.ack(s, err); aerr != nil {
			return aerr
		}
	}
}

// ErrManifestNeeded is the destination's answer to a Done that asked it
// to build the manifest from the placements and could not: the source
// sends the manifest and says Done again.
var ErrManifestNeeded = errors.New("the destination needs the manifest")

// errOpenRefused marks an Open this node refused (and said why).
var errOpenRefused = errors.New("open refused")

// errSourceAborted is why a migration the source aborted fails.
var errSourceAborted = errors.New("the source aborted it")

// errAbandoned is why a migration whose control stream ended early fails.
var errAbandoned = errors.New("its control stream ended before the manifest was handed over")

// ack answers one control frame; a refusal ends the session.
func (n *Node) ack(s network.Stream, err error) error {
	_ = s.SetWriteDeadline(time.Now().Add(n.cfg.RequestTimeout))
	if err != nil {
		_, _ = s.Write(wire.AppendAck(nil, wire.StatusRefused, err.Error()))
		return err
	}
	_, werr := s.Write(wire.AppendAck(nil, wire.StatusOK, ""))
	return werr
}

// answer acknowledges a well-formed request, refused if err is set: a
// refusal is an answer, not a broken stream, so it returns only a failure
// to write.
func (n *Node) answer(s network.Stream, err error) error {
	_ = s.SetWriteDeadline(time.Now().Add(n.cfg.RequestTimeout))
	st, msg := wire.StatusOK, ""
	if err != nil {
		st, msg = wire.StatusRefused, err.Error()
	}
	_, werr := s.Write(wire.AppendAck(nil, st, msg))
	return werr
}

func (n *Node) serveDemand(s network.Stream, r *wire.Reader, from peer.ID, srv DemandServer, first []byte) error {
	var out, data []byte
	p := first
	for {
		d, err := wire.DecodeDemand(p)
		if err != nil {
			n.refuse(s, wire.StatusRefused, err.Error())
			return err
		}
		var st wire.Status
		data, st = srv.ServeDemand(from, d, data[:0])
		out = wire.AppendDemandAck(out[:0], st, data)
		_ = s.SetWriteDeadline(time.Now().Add(n.cfg.RequestTimeout))
		if _, err := s.Write(out); err != nil {
			return err
		}
		if st == wire.StatusOK {
			n.m.servedChunks.WithLabelValues("demand").Inc()
			n.m.servedBytes.Add(float64(len(data)))
		}
		_ = s.SetReadDeadline(time.Now().Add(serveIdleFactor * n.cfg.RequestTimeout))
		var t wire.Type
		t, p, err = r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if t != wire.TypeDemand {
			n.refuse(s, wire.StatusRefused, "expected demand, got "+t.String())
			return fmt.Errorf("demand stream: got %s: %w", t, wire.ErrUnexpected)
		}
	}
}

// MigrationSession is the source's control stream to a destination.
// Holders and Placements are pipelined; a refusal surfaces on a later call.
type MigrationSession struct {
	rs     *reqStream
	peer   peer.ID
	sealed bool // placements carry plain IDs
	mu     sync.Mutex
	err    error
}

// OpenMigration opens a migration at p and waits for it to be accepted.
func (n *Node) OpenMigration(ctx context.Context, p peer.ID, o wire.Open) (*MigrationSession, error) {
	s, err := n.host.NewStream(ctx, p, ProtoMigrate)
	if err != nil {
		return nil, fmt.Errorf("open migration to %s: %w", p, err)
	}
	ms := &MigrationSession{rs: newReqStream(s, 16, n.cfg.RequestTimeout), peer: p, sealed: o.Sealed()}
	if err := ms.call(ctx, func(b []byte) []byte { return wire.AppendOpen(b, o) }); err != nil {
		ms.rs.abort()
		return nil, fmt.Errorf("open migration to %s: %w", p, err)
	}
	return ms, nil
}

func (ms *MigrationSession) record(err error) {
	if err == nil {
		return
	}
	ms.mu.Lock()
	if ms.err == nil {
		ms.err = err
	}
	ms.mu.Unlock()
}

func (ms *MigrationSession) failure() error {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.err
}

func ackErr(t wire.Type, p []byte, err error) error {
	if err == nil {
		err = expect(t, p, wire.TypeAck)
	}
	if err != nil {
		return err
	}
	st, msg, err := wire.DecodeAck(p)
	if err != nil {
		return err
	}
	if st != wire.StatusOK {
		return &wire.RemoteError{Code: st, Message: msg}
	}
	return nil
}

// send pipelines one frame; its ack is checked asynchronously.
func (ms *MigrationSession) send(ctx context.Context, encode func([]byte) []byte) error {
	if err := ms.failure(); err != nil {
		return err
	}
	return ms.rs.send(ctx, encode, func(t wire.Type, p []byte, err error) { ms.record(ackErr(t, p, err)) })
}

// call sends one frame and waits for its ack (and every earlier one); a
// refusal fails the session.
func (ms *MigrationSession) call(ctx context.Context, encode func([]byte) []byte) error {
	return ms.settle(ctx, ms.ask(ctx, encode))
}

// settle records an answer (a refusal fails the session) and returns the
// session's failure; a cancelled wait records nothing.
func (ms *MigrationSession) settle(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	ms.record(err)
	return ms.failure()
}

// ask sends one frame and returns its ack's answer, recording nothing.
func (ms *MigrationSession) ask(ctx context.Context, encode func([]byte) []byte) error {
	done := make(chan error, 1)
	if err := ms.rs.send(ctx, encode, func(t wire.Type, p []byte, err error) { done <- ackErr(t, p, err) }); err != nil {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Holders declares holder indices used by later placements.
func (ms *MigrationSession) Holders(ctx context.Context, hs []wire.Holder) error {
	return ms.send(ctx, func(b []byte) []byte { return wire.AppendHolders(b, hs) })
}

// Placements streams where chunks are (at most wire.MaxPlacements a call).
func (ms *MigrationSession) Placements(ctx context.Context, ps []wire.Placement) error {
	return ms.send(ctx, func(b []byte) []byte { return wire.AppendPlacements(b, ps, ms.sealed) })
}

// PushPlacements places the chunks of acknowledged pushes by the pushes'
// digests (at most wire.MaxPushPlacements; unsealed migrations only).
func (ms *MigrationSession) PushPlacements(ctx context.Context, pps []wire.PushPlacement) error {
	return ms.send(ctx, func(b []byte) []byte { return wire.AppendPushPlacements(b, pps) })
}

// Cancel tells the destination the migration is given up, for reason, and
// waits until it has acknowledged: by then it has stopped anything it had
// started from the migration (a guest), so the source may resume its own.
func (ms *MigrationSession) Cancel(ctx context.Context, reason string) error {
	return ms.ask(ctx, func(b []byte) []byte { return wire.AppendAbort(b, reason) })
}

// Done hands over the manifest root and waits until the destination has
// accepted it and everything sent before. With build, the destination is
// to build the manifest from the placements; ErrManifestNeeded if it
// could not (the session goes on: send the manifest, Done again).
func (ms *MigrationSession) Done(ctx context.Context, root chunk.ID, build bool) error {
	err := ms.ask(ctx, func(b []byte) []byte { return wire.AppendDone(b, root, build) })
	var re *wire.RemoteError
	if build && errors.As(err, &re) && re.Code == wire.StatusMissing {
		return ErrManifestNeeded // not a failure: the session goes on
	}
	return ms.settle(ctx, err)
}

// Close ends the session.
func (ms *MigrationSession) Close() error {
	err := ms.rs.close()
	if f := ms.failure(); f != nil {
		return f
	}
	return err
}

// Abort resets the session.
func (ms *MigrationSession) Abort() { ms.rs.abort() }

// DemandStream reads chunks by position from a migration's source.
type DemandStream struct {
	rs   *reqStream
	peer peer.ID
}

// OpenDemand opens a demand stream to the source p.
func (n *Node) OpenDemand(ctx context.Context, p peer.ID, window int) (*DemandStream, error) {
	s, err := n.host.NewStream(ctx, p, ProtoMigrate)
	if err != nil {
		return nil, fmt.Errorf("open demand stream to %s: %w", p, err)
	}
	return &DemandStream{rs: newReqStream(s, max(1, window), n.cfg.RequestTimeout), peer: p}, nil
}

// Demand asks for the chunk at d's position; done gets its bytes (valid
// only during the call; not verified here: the caller checks them against
// the manifest or placement once it knows the ID) or an error.
func (ds *DemandStream) Demand(ctx context.Context, d wire.DemandReq, done func(wire.Status, []byte, error)) error {
	return ds.rs.send(ctx, func(b []byte) []byte { return wire.AppendDemand(b, d) },
		func(t wire.Type, p []byte, err error) {
			if err == nil {
				err = expect(t, p, wire.TypeDemandAck)
			}
			if err != nil {
				done(0, nil, fmt.Errorf("demand from %s: %w", ds.peer, err))
				return
			}
			st, data, err := wire.DecodeDemandAck(p)
			done(st, data, err)
		})
}

// Close closes the stream after outstanding answers.
func (ds *DemandStream) Close() error { return ds.rs.close() }

// Abort resets the stream.
func (ds *DemandStream) Abort() { ds.rs.abort() }
