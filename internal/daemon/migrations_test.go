package daemon

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sgrelay/sg/api"
)

// The records of ended migrations are bounded (oldest dropped first;
// running ones never), and can be removed one by one or pruned.
func TestMigrationRecordsBoundedAndPrunable(t *testing.T) {
	o := newOutgoing(3)
	running := &api.Migration{ID: "aaaaaaaa-running", State: api.StateRunning, Started: time.Now()}
	o.records = append(o.records, running)
	for i := range 10 {
		o.retired(api.Migration{ID: fmt.Sprintf("%08d-ended", i), State: api.StateDone, Role: "destination"})
	}
	got := o.list()
	if len(got) != 4 || got[0].ID != running.ID || got[1].ID != "00000007-ended" || got[3].ID != "00000009-ended" {
		t.Fatalf("after 10 ended with a bound of 3: %v", ids(got))
	}
	if !got[3].Retired {
		t.Fatal("a retired record is not marked retired")
	}
	if _, err := o.remove("aaaaaaaa"); !errors.Is(err, errStillRunning) {
		t.Fatalf("rm of a running migration: %v", err)
	}
	if _, err := o.remove("0000"); !errors.Is(err, errShortIDPrefix) {
		t.Fatalf("rm with a 4-character prefix: %v", err)
	}
	if _, err := o.remove("bbbbbbbb"); !errors.Is(err, errNoRecord) {
		t.Fatalf("rm of an unknown ID: %v", err)
	}
	if id, err := o.remove("00000008"); err != nil || id != "00000008-ended" {
		t.Fatalf("rm = %q, %v", id, err)
	}
	if n := o.prune(); n != 2 {
		t.Fatalf("prune removed %d, want 2", n)
	}
	if got := o.list(); len(got) != 1 || got[0].ID != running.ID {
		t.Fatalf("after prune: %v", ids(got))
	}
}

func ids(ms []api.Migration) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}
