package fetch

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/seal"
)

// stateFile is where a gather records what it needs to resume after a
// restart: written once its manifest is resolved, marked complete at the
// end (beside the region files).
const stateFile = "gather.json"

// GatherState is a gather's persisted state.
type GatherState struct {
	VM        string `json:"vm"`
	Migration string `json:"migration"`
	Root      string `json:"manifest_cid"`
	// Secret opens a sealed manifest (hex). The record is mode 0600 in
	// the destination's data directory, which holds the VM in plaintext.
	Secret   string `json:"secret,omitempty"`
	Complete bool   `json:"complete"`
	Dir      string `json:"-"`
}

// ManifestSecret decodes the record's secret (zero if unsealed).
func (st GatherState) ManifestSecret() (seal.Secret, error) {
	if st.Secret == "" {
		return seal.Secret{}, nil
	}
	return seal.ParseSecret(st.Secret)
}

// ReadGatherStates lists the gathers recorded under dir (one directory
// each), complete or not. Unreadable records are errors, not skipped:
// an operator must hear about a gather that cannot resume.
func ReadGatherStates(dir string) ([]GatherState, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*", stateFile))
	if err != nil {
		return nil, err
	}
	var out []GatherState
	var errs []error
	for _, p := range paths {
		b, err := os.ReadFile(p)
		var st GatherState
		if err == nil {
			err = json.Unmarshal(b, &st)
		}
		if err == nil {
			_, err = chunk.Parse(st.Root)
		}
		if err == nil {
			_, err = st.ManifestSecret()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("gather record %s: %w", p, err))
			continue
		}
		st.Dir = filepath.Dir(p)
		out = append(out, st)
	}
	return out, errors.Join(errs...)
}

// saveState writes the gather's record atomically.
func (g *Gatherer) saveState(root chunk.ID, complete bool) error {
	st := GatherState{VM: g.in.VM, Migration: g.in.ID.String(), Root: root.String(), Complete: complete}
	if !g.in.Secret.IsZero() {
		st.Secret = g.in.Secret.String()
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := stateFile + ".tmp"
	if err := g.dir.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return g.dir.Rename(tmp, stateFile)
}

// keptLocked reports whether a resumed gather's file already holds id at
// `at` (written before the restart): it is then present, never fetched.
func (g *Gatherer) keptLocked(at Position, id chunk.ID) bool {
	r := g.in.Regions[at.Region]
	off := int64(at.Index) * int64(r.ChunkSize)
	n := min(int64(r.ChunkSize), int64(r.Size)-off)
	if cap(g.keepBuf) < int(n) {
		g.keepBuf = make([]byte, n)
	}
	buf := g.keepBuf[:n]
	if _, err := g.files[at.Region].ReadAt(buf, off); err != nil {
		return false
	}
	return chunk.Verify(g.fileIDLocked(id), buf)
}
