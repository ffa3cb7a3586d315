package wire

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestHoldRoundTrip(t *testing.T) {
	for _, h := range []Hold{
		{Kind: HoldMigration, IDs: []MigrationID{{1}, {2}}, Dest: "12D3KooWdest"},
		{Kind: HoldPut, IDs: []MigrationID{{3}}},
		{Kind: HoldPut, IDs: []MigrationID{{3}}, Expire: 72 * time.Hour},
	} {
		f := AppendHold(nil, h)
		got, err := DecodeHold(f[headerSize:])
		if err != nil {
			t.Fatalf("%+v: %v", h, err)
		}
		if got.Kind != h.Kind || !slices.Equal(got.IDs, h.IDs) || got.Dest != h.Dest || got.Expire != h.Expire {
			t.Fatalf("decoded %+v, want %+v", got, h)
		}
	}
}

// A hold that says too much or too little is malformed at decode: no
// migration hold without a destination, no put hold naming one, no
// migration sets its own lease, no kind unknown.
func TestHoldRefusesWhatItCannotMean(t *testing.T) {
	many := make([]MigrationID, MaxHoldIDs+1)
	for name, h := range map[string]Hold{
		"migration without destination": {Kind: HoldMigration, IDs: []MigrationID{{1}}},
		"migration with an expiry":      {Kind: HoldMigration, IDs: []MigrationID{{1}}, Dest: "d", Expire: time.Hour},
		"put with a destination":        {Kind: HoldPut, IDs: []MigrationID{{1}}, Dest: "d"},
		"put of two ids":                {Kind: HoldPut, IDs: []MigrationID{{1}, {2}}},
		"no ids":                        {Kind: HoldPut},
		"too many ids":                  {Kind: HoldMigration, IDs: many, Dest: "d"},
		"unknown kind":                  {Kind: 9, IDs: []MigrationID{{1}}},
		"expiry past the cap":           {Kind: HoldPut, IDs: []MigrationID{{1}}, Expire: MaxHoldExpire + time.Second},
	} {
		if err := h.Validate(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Validate %v", name, err)
		}
		f := AppendHold(nil, h)
		if _, err := DecodeHold(f[headerSize:]); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: DecodeHold %v", name, err)
		}
	}
	f := AppendHold(nil, Hold{Kind: HoldPut, IDs: []MigrationID{{1}}})
	if _, err := DecodeHold(append(f[headerSize:], 0)); !errors.Is(err, ErrMalformed) {
		t.Errorf("trailing byte: %v", err)
	}
}
