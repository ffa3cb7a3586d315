package daemon

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/sgrelay/sg/internal/fetch"
)

// What a retired migration leaves on disk is removed unless something
// uses it: a source that makes gathers fail on purpose, after most of
// the data arrived, cannot fill the data directory with partial images
// or guest logs; a complete VM's files, and the files of a guest that
// runs, stay.
func TestRetireRemovesWhatNothingUses(t *testing.T) {
	d := &Daemon{log: slog.New(slog.DiscardHandler)}
	failed := errors.Join(fetch.ErrGatherFailed, errors.New("chunk of the wrong size"))
	for _, c := range []struct {
		name          string
		err           error
		use           guestUse
		keepVM, keepR bool
	}{
		{"failed, no guest", failed, guestUse{}, false, false},
		{"abandoned, no guest", fetch.ErrAbandoned, guestUse{}, false, false},
		{"complete, guest moved away or never started", nil, guestUse{}, true, false},
		{"complete, guest on the local files", nil, guestUse{running: true, local: true}, true, true},
		{"failed, guest still starting", failed, guestUse{starting: true}, true, true},
		{"failed, guest on the (aborted) views", failed, guestUse{running: true, resumed: true}, true, true},
		{"failed, guest ran on the views and stopped: its writes stay", failed, guestUse{resumed: true}, true, false},
		{"abandoned, guest ran and was stopped: the VM goes on at its source", fetch.ErrAbandoned, guestUse{resumed: true}, false, false},
		{"complete, guest failed to start: its logs stay", nil, guestUse{failed: true}, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := t.TempDir()
			vmDir := filepath.Join(data, "vms", "0123")
			runDir := filepath.Join(data, "guests", "x1")
			for _, f := range []string{filepath.Join(vmDir, "mem.img"), filepath.Join(runDir, "serial.log")} {
				if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(f, make([]byte, 4096), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			d.removeLeftovers("web1", vmDir, runDir, c.err, c.use)
			if _, err := os.Stat(vmDir); (err == nil) != c.keepVM {
				t.Errorf("gathered files: stat %v, want kept=%v", err, c.keepVM)
			}
			if _, err := os.Stat(runDir); (err == nil) != c.keepR {
				t.Errorf("run directory: stat %v, want kept=%v", err, c.keepR)
			}
			if _, err := os.Stat(filepath.Join(data, "vms")); err != nil {
				t.Errorf("the data directory's vms lost: %v", err)
			}
		})
	}
}
