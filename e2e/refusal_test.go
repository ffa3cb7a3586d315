package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
)

// A request the node refuses for one of its fields reaches the user
// naming the sgctl flag that sets it: the node says which field, sgctl
// which flag.
func TestRefusalsNameTheFlag(t *testing.T) {
	c := startCluster(t, "a", "b")
	a := c.Nodes[0]
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	in, _ := writeRandomFile(t, 1<<20)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"put", in, "--replicas", "3"}, "--replicas: 3 replicas need 3 connected peers; 1 connected (see sgctl peers)"},
		// "0" is in no peer ID (base58).
		{[]string{"evict", "vm", "web1", "--to", "000"}, `--to: "000" matches no connected peer (see sgctl peers)`},
		{[]string{"evict", "vm", "web1", "--to", c.Nodes[1].PeerID, "--direct", "--replicas", "2"}, "--direct: a direct eviction sends to the destination only"},
		{[]string{"gather", chunk.Sum([]byte("x")).String(), "--from", "000"}, `--from: "000" matches no connected peer`},
	} {
		out, err := a.Sgctl(ctx, tc.args...)
		if err == nil {
			t.Fatalf("sgctl %q succeeded: %s", tc.args, out)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("sgctl %q: %v\nwant %q in it", tc.args, err, tc.want)
		}
	}
}
