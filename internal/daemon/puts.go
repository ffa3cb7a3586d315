package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/wire"
)

// putRecord is what this node remembers of a put it made, so that
// `sgctl rm CID` can ask its targets to drop it: they know it by the put's
// ID, and keep it for the peer that pushed it only.
type putRecord struct {
	ID      string   `json:"id"` // the put's wire.MigrationID, in hex
	Targets []string `json:"targets"`
}

// putsDir holds one record per put, named by its CID.
func (d *Daemon) putsDir() string { return filepath.Join(d.cfg.DataDir, "puts") }

func (d *Daemon) putPath(root chunk.ID) string {
	return filepath.Join(d.putsDir(), root.String()+".json")
}

// savePut records a finished put.
func (d *Daemon) savePut(root chunk.ID, rec putRecord) error {
	if err := os.MkdirAll(d.putsDir(), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	tmp := d.putPath(root) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, d.putPath(root))
}

// removePutTimeout bounds the wait for each target's answer.
const removePutTimeout = 30 * time.Second

// serveRemovePut asks every target of a put this node made to drop it,
// and forgets the put once all have.
func (d *Daemon) serveRemovePut(w http.ResponseWriter, r *http.Request) {
	root, ok := parseCID(w, r.PathValue("cid"))
	if !ok {
		return
	}
	b, err := os.ReadFile(d.putPath(root))
	if errors.Is(err, os.ErrNotExist) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no put %s made by this node", root))
		return
	}
	var rec putRecord
	var id wire.MigrationID
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	if err == nil {
		id, err = wire.ParseMigrationID(rec.ID)
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, fmt.Errorf("put record %s: %w", root, err))
		return
	}
	var errs error
	for _, t := range rec.Targets {
		p, err := peer.Decode(t)
		if err == nil {
			ctx, cancel := context.WithTimeout(r.Context(), removePutTimeout)
			err = d.node.Remove(ctx, p, id)
			cancel()
		}
		if err != nil {
			errs = errors.Join(errs, fmt.Errorf("%s: %w", t, err))
		}
	}
	if errs != nil {
		writeError(w, http.StatusBadGateway, fmt.Errorf("remove put %s: %w", root, errs))
		return
	}
	if err := os.Remove(d.putPath(root)); err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	d.log.Info("put removed", "cid", root, "targets", rec.Targets)
	writeJSON(w, http.StatusOK, api.RemovePutResult{CID: root.String(), Peers: rec.Targets})
}
