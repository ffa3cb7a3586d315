package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sgrelay/sg/api"
)

// Three real sgnode processes: put 64 MiB with two replicas on A, get it on
// C (a replica: served locally) and on A (which holds nothing: fetched over
// QUIC from B and C), both byte-identical; C lists A and B with an RTT.
func TestPutGetThreeNodes(t *testing.T) {
	c := startCluster(t, "a", "b", "c")
	a, b, cn := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	in, data := writeRandomFile(t, 64<<20)
	var put api.PutResult
	if err := a.SgctlJSON(ctx, &put, "put", in, "--replicas", "2"); err != nil {
		t.Fatal(err)
	}
	if put.Size != 64<<20 || put.Chunks != 1024 || len(put.SentBytes) != 2 {
		t.Fatalf("put result %+v", put)
	}
	for _, peer := range []string{b.PeerID, cn.PeerID} {
		if put.SentBytes[peer] != put.UniqueBytes+put.ManifestBytes {
			t.Fatalf("replica %s acked %d bytes, want %d", peer, put.SentBytes[peer], put.UniqueBytes+put.ManifestBytes)
		}
	}

	for _, n := range []struct {
		name string
		node interface {
			SgctlJSON(context.Context, any, ...string) error
		}
		network bool
	}{{"c (replica)", cn, false}, {"a (holds nothing)", a, true}} {
		out := filepath.Join(t.TempDir(), "out.bin")
		var got api.GetResult
		if err := n.node.SgctlJSON(ctx, &got, "get", put.CID, "-o", out); err != nil {
			t.Fatalf("get on %s: %v", n.name, err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, data) {
			t.Fatalf("get on %s: output differs from input", n.name)
		}
		var fetched int64
		for _, v := range got.Fetched {
			fetched += v
		}
		if n.network && fetched != 64<<20 {
			t.Fatalf("get on %s fetched %d bytes over the network, want all 64 MiB", n.name, fetched)
		}
		if !n.network && got.LocalChunks != 1024 {
			t.Fatalf("get on %s: %d chunks local, want 1024", n.name, got.LocalChunks)
		}
	}

	var peers []api.Peer
	if err := cn.SgctlJSON(ctx, &peers, "peers"); err != nil {
		t.Fatal(err)
	}
	rtts := map[string]time.Duration{}
	for _, p := range peers {
		if p.Connected {
			rtts[p.ID] = p.RTT
		}
	}
	for _, want := range []string{a.PeerID, b.PeerID} {
		if rtts[want] <= 0 {
			t.Fatalf("sgctl peers on c: %s has no RTT: %+v", want, peers)
		}
	}
	// The human-readable table too.
	table, err := cn.Sgctl(ctx, "peers")
	if err != nil || !strings.Contains(string(table), a.PeerID) || !strings.Contains(string(table), "connected") {
		t.Fatalf("sgctl peers table: %v\n%s", err, table)
	}
}

// A node whose identity is not in the peers file dials the members but is
// refused: it has no connected peer, cannot push, and the members count
// the refusals.
func TestOutsiderRefused(t *testing.T) {
	c := startCluster(t, "a", "b")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := c.AddOutsider(ctx, "outsider")
	if err != nil {
		t.Fatal(err)
	}
	// Give its dialer a few rounds.
	deadline := time.Now().Add(15 * time.Second)
	for {
		refused, _ := c.Nodes[0].Metric(ctx, "sg_node_refused_connections_total")
		if refused > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("member a never refused the outsider")
		}
		time.Sleep(200 * time.Millisecond)
	}
	var peers []api.Peer
	if err := out.SgctlJSON(ctx, &peers, "peers"); err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if p.Connected {
			t.Fatalf("outsider is connected to %s", p.ID)
		}
	}
	in, _ := writeRandomFile(t, 1<<20)
	if _, err := out.Sgctl(ctx, "put", in); err == nil {
		t.Fatal("the outsider's put succeeded")
	}
	for _, m := range c.Nodes[:2] {
		var st api.Status
		if err := m.SgctlJSON(ctx, &st, "status"); err != nil {
			t.Fatal(err)
		}
		for _, tier := range st.Tiers {
			if tier.Chunks != 0 {
				t.Fatalf("member %s stored %d chunks", m.Name, tier.Chunks)
			}
		}
		var mp []api.Peer
		if err := m.SgctlJSON(ctx, &mp, "peers"); err != nil {
			t.Fatal(err)
		}
		for _, p := range mp {
			if p.ID == out.PeerID && p.Connected {
				t.Fatalf("member %s lists the outsider as connected", m.Name)
			}
		}
	}
}

// A put's copies are kept until the node that made it removes them: with
// real sgnode processes, `sgctl rm CID` on the putter empties the peer
// that held them, and a second rm finds nothing to remove.
func TestPutGoesWithRm(t *testing.T) {
	c := startCluster(t, "a", "b")
	a, b := c.Nodes[0], c.Nodes[1]
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	chunks := func() int64 {
		var st api.Status
		if err := b.SgctlJSON(ctx, &st, "status"); err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, tier := range st.Tiers {
			n += tier.Chunks
		}
		return n
	}
	in, _ := writeRandomFile(t, 4<<20)
	var put api.PutResult
	if err := a.SgctlJSON(ctx, &put, "put", in); err != nil {
		t.Fatal(err)
	}
	if n := chunks(); n < 64 {
		t.Fatalf("after the put b holds %d chunks, want its 64 and the manifest", n)
	}
	var rm api.RemovePutResult
	if err := a.SgctlJSON(ctx, &rm, "rm", put.CID); err != nil {
		t.Fatal(err)
	}
	if len(rm.Peers) != 1 || rm.Peers[0] != b.PeerID {
		t.Fatalf("rm told %v, want b", rm.Peers)
	}
	if n := chunks(); n != 0 {
		t.Fatalf("after sgctl rm b holds %d chunks", n)
	}
	if _, err := a.Sgctl(ctx, "rm", put.CID); err == nil {
		t.Fatal("a second rm of the same put succeeded")
	}
}
