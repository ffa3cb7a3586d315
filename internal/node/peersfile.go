package node

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// ParsePeers reads a cluster peers file: one multiaddr ending in
// /p2p/<peer-id> per line; blank lines and lines starting with # are
// skipped. Several lines may name the same peer (several addresses).
func ParsePeers(r io.Reader) ([]peer.AddrInfo, error) {
	byID := map[peer.ID]int{}
	var out []peer.AddrInfo
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("line %d: %q: %w", line, s, err)
		}
		ai, err := peer.AddrInfoFromP2pAddr(a)
		if err != nil {
			return nil, fmt.Errorf("line %d: %q must end in /p2p/<peer-id>: %w", line, s, err)
		}
		if len(ai.Addrs) == 0 {
			return nil, fmt.Errorf("line %d: %q has a peer ID but no address to dial", line, s)
		}
		if i, ok := byID[ai.ID]; ok {
			out[i].Addrs = append(out[i].Addrs, ai.Addrs...)
			continue
		}
		byID[ai.ID] = len(out)
		out = append(out, *ai)
	}
	return out, sc.Err()
}

// ReadPeersFile parses the peers file at path.
func ReadPeersFile(path string) ([]peer.AddrInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read peers file: %w", err)
	}
	defer f.Close()
	ps, err := ParsePeers(f)
	if err != nil {
		return nil, fmt.Errorf("read peers file %s: %w", path, err)
	}
	return ps, nil
}
