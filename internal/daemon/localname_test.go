package daemon

import (
	"crypto/rand"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/sgrelay/sg/internal/wire"
)

// A source chooses its migration IDs, so it could choose one whose prefix
// is another migration's and so take over its sockets. Local names depend
// on a key only the node has: the same ID names differently on two nodes,
// two IDs sharing a prefix name differently, and a node names an ID the
// same way each time (across restarts).
func TestLocalNamesCannotBeAimed(t *testing.T) {
	newNames := func() localNames {
		k, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		l, err := newLocalNames(k)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	a, b := newNames(), newNames()
	var id, sibling wire.MigrationID
	rand.Read(id[:])
	sibling = id
	sibling[15] ^= 1 // the same 120-bit prefix
	if got := a.of(id); len(got) != 16 || got != a.of(id) {
		t.Fatalf("name %q: want 16 stable hex digits", got)
	}
	if a.of(id) == b.of(id) {
		t.Fatalf("two nodes name migration %s alike: %s", id, a.of(id))
	}
	if a.of(id) == a.of(sibling) {
		t.Fatalf("IDs sharing a prefix share a name: %s", a.of(id))
	}
	if a.of(id)[:8] == id.String()[:8] {
		t.Fatalf("name %s shows the ID %s", a.of(id), id)
	}
}
