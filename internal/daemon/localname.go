package daemon

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/sgrelay/sg/internal/wire"
)

// localNames makes the short names of a migration's unix sockets and run
// directory. A unix socket's path must fit in 108 bytes, so these cannot
// carry the whole migration ID; and the ID is chosen by the source, so a
// prefix of it could be chosen to collide with another migration's (and
// take over its QMP socket or NBD export). An HMAC of the ID under a key
// only this node knows is short, stable across restarts (a guest outlives
// sgnode) and cannot be aimed at another migration's name.
type localNames struct{ key []byte }

// newLocalNames derives the key from the node's identity, which is as
// private as a key of its own and already kept.
func newLocalNames(identity crypto.PrivKey) (localNames, error) {
	raw, err := identity.Raw()
	if err != nil {
		return localNames{}, err
	}
	h := sha256.New()
	h.Write([]byte("sg local names\x00"))
	h.Write(raw)
	return localNames{key: h.Sum(nil)}, nil
}

// of is migration id's local name: 16 hex digits.
func (l localNames) of(id wire.MigrationID) string {
	m := hmac.New(sha256.New, l.key)
	m.Write(id[:])
	return hex.EncodeToString(m.Sum(nil)[:8])
}
