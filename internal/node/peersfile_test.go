package node

import (
	"strings"
	"testing"
)

const peersSample = `# the cluster
/ip4/10.0.0.1/udp/4100/quic-v1/p2p/12D3KooWGzgBvZgJT9TbUMaRDzcDbt1XuZQXWXJ8r4ByVAsuNuLs
/ip6/::1/udp/4100/quic-v1/p2p/12D3KooWGzgBvZgJT9TbUMaRDzcDbt1XuZQXWXJ8r4ByVAsuNuLs

/ip4/10.0.0.2/udp/4100/quic-v1/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo
`

func TestParsePeers(t *testing.T) {
	ps, err := ParsePeers(strings.NewReader(peersSample))
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || len(ps[0].Addrs) != 2 || len(ps[1].Addrs) != 1 {
		t.Fatalf("parsed %v: want 2 peers, the first with 2 addresses", ps)
	}
	for name, bad := range map[string]string{
		"no peer ID":      "/ip4/10.0.0.1/udp/4100/quic-v1\n",
		"not a multiaddr": "10.0.0.1:4100\n",
		"no address":      "/p2p/12D3KooWGzgBvZgJT9TbUMaRDzcDbt1XuZQXWXJ8r4ByVAsuNuLs\n",
	} {
		if _, err := ParsePeers(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%s: %v, want an error naming line 1", name, err)
		}
	}
}

// FuzzParsePeers: any peers file parses or fails with an error naming its
// line, never panics; every parsed peer has an ID and an address.
func FuzzParsePeers(f *testing.F) {
	f.Add(peersSample)
	f.Add("/ip4/1.2.3.4/udp/1/quic-v1/p2p/\n")
	f.Add("/dns4/x/tcp/1/p2p/12D3KooWGzgBvZgJT9TbUMaRDzcDbt1XuZQXWXJ8r4ByVAsuNuLs\n#\n")
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParsePeers(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, p := range ps {
			if p.ID == "" || len(p.Addrs) == 0 {
				t.Fatalf("parsed a peer without ID or address: %v", p)
			}
		}
	})
}
