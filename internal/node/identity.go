package node

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// LoadIdentity reads the Ed25519 key at path.
func LoadIdentity(path string) (crypto.PrivKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	k, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("load identity %s: %w", path, err)
	}
	if k.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("load identity %s: key type %v, want Ed25519", path, k.Type())
	}
	return k, nil
}

// LoadOrCreateIdentity reads the key at path, or creates one (mode 0600) if
// there is none. It never overwrites an existing key.
func LoadOrCreateIdentity(path string) (crypto.PrivKey, bool, error) {
	k, err := LoadIdentity(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	k, _, err = crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("create identity: %w", err)
	}
	b, err := crypto.MarshalPrivateKey(k)
	if err != nil {
		return nil, false, fmt.Errorf("create identity: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("create identity: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("create identity: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("create identity: %w", err)
	}
	return k, true, f.Close()
}

// PeerID returns the peer ID of a key.
func PeerID(k crypto.PrivKey) (peer.ID, error) { return peer.IDFromPrivateKey(k) }
