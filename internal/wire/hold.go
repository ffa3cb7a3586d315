package wire

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Hold frames say on whose behalf chunks are kept.
//
//	Hold    kind u8, n u16, n × id [16], dest (len u8, bytes), expire u32 s
//	        the first frame of every push stream: what its chunks are for
//	Renew   id [16]   on /sg/migrate: the destination still gathers id
//	Remove  id [16]   on /sg/migrate: the putter drops its put id
//
// A holder keeps the chunks a Hold covers until the hold ends: for a
// migration, a Release from its destination (for every migration the hold
// names) or its lease running out without a Renew; for a put, a Remove
// from the peer that pushed it or its expiry.
const (
	TypeHold   Type = 30
	TypeRenew  Type = 31
	TypeRemove Type = 32
)

// HoldKind says what a Hold is for.
type HoldKind uint8

// Hold kinds. Values are part of the wire format.
const (
	HoldMigration HoldKind = 0 // chunks of an eviction's migrations
	HoldPut       HoldKind = 1 // chunks of a put, kept until removed
)

// Limits of a Hold.
const (
	// MaxHoldIDs caps the migrations one hold names (one per VM of an
	// eviction).
	MaxHoldIDs = 256
	// MaxHoldExpire caps a put's expiry.
	MaxHoldExpire = 10 * 365 * 24 * time.Hour
)

// Hold says what the chunks pushed on one stream are for.
type Hold struct {
	Kind HoldKind
	// IDs are the eviction's migrations (HoldMigration), or the put's one
	// ID (HoldPut).
	IDs []MigrationID
	// Dest is the migrations' destination peer, in its text form
	// (HoldMigration only): the one peer whose Release or Renew counts.
	Dest string
	// Expire ends a put's hold this long after it was made (0: kept until
	// removed). Zero for a migration: the holder sets its lease.
	Expire time.Duration
}

// Validate reports the first thing wrong with h.
func (h Hold) Validate() error {
	switch {
	case len(h.IDs) == 0 || len(h.IDs) > MaxHoldIDs:
		return fmt.Errorf("hold: %d ids (want 1..%d): %w", len(h.IDs), MaxHoldIDs, ErrMalformed)
	case h.Expire < 0 || h.Expire > MaxHoldExpire || h.Expire%time.Second != 0:
		return fmt.Errorf("hold: expiry %s (want whole seconds up to %s): %w", h.Expire, MaxHoldExpire, ErrMalformed)
	}
	switch h.Kind {
	case HoldMigration:
		if h.Dest == "" || len(h.Dest) > maxPeerLen || h.Expire != 0 {
			return fmt.Errorf("hold: a migration hold needs a destination of 1..%d bytes and no expiry: %w", maxPeerLen, ErrMalformed)
		}
	case HoldPut:
		if h.Dest != "" || len(h.IDs) != 1 {
			return fmt.Errorf("hold: a put hold has one id and no destination: %w", ErrMalformed)
		}
	default:
		return fmt.Errorf("hold: kind %d: %w", h.Kind, ErrMalformed)
	}
	return nil
}

// AppendHold encodes a Hold frame; h must be valid.
func AppendHold(dst []byte, h Hold) []byte {
	b := Begin(dst, TypeHold)
	b = append(b, byte(h.Kind))
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.IDs)))
	for _, id := range h.IDs {
		b = append(b, id[:]...)
	}
	b = append(b, byte(len(h.Dest)))
	b = append(b, h.Dest...)
	b = binary.BigEndian.AppendUint32(b, uint32(h.Expire/time.Second))
	return Finish(b)
}

// DecodeHold decodes and validates a Hold payload.
func DecodeHold(p []byte) (Hold, error) {
	var h Hold
	if len(p) < 3 {
		return h, fmt.Errorf("hold: truncated: %w", ErrMalformed)
	}
	h.Kind = HoldKind(p[0])
	n := int(binary.BigEndian.Uint16(p[1:]))
	p = p[3:]
	if n == 0 || n > MaxHoldIDs || len(p) < n*16 {
		return h, fmt.Errorf("hold: %d ids in %d bytes: %w", n, len(p), ErrMalformed)
	}
	h.IDs = make([]MigrationID, n)
	for i := range h.IDs {
		copy(h.IDs[i][:], p[i*16:])
	}
	p = p[n*16:]
	dest, p, err := readShort(p, maxPeerLen)
	if err != nil {
		return h, fmt.Errorf("hold: destination: %w", err)
	}
	if len(p) != 4 {
		return h, fmt.Errorf("hold: %d bytes after the destination: %w", len(p), ErrMalformed)
	}
	h.Dest = dest
	h.Expire = time.Duration(binary.BigEndian.Uint32(p)) * time.Second
	return h, h.Validate()
}

// AppendRenew encodes a Renew frame: the destination still gathers id.
func AppendRenew(dst []byte, id MigrationID) []byte {
	return Finish(append(Begin(dst, TypeRenew), id[:]...))
}

// AppendRemove encodes a Remove frame: the putter drops its put id.
func AppendRemove(dst []byte, id MigrationID) []byte {
	return Finish(append(Begin(dst, TypeRemove), id[:]...))
}

// DecodeHoldID decodes a Renew or Remove payload.
func DecodeHoldID(p []byte) (MigrationID, error) {
	var id MigrationID
	if len(p) != len(id) {
		return id, fmt.Errorf("renew/remove: %d bytes: %w", len(p), ErrMalformed)
	}
	copy(id[:], p)
	return id, nil
}
