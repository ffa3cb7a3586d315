package node

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestProbeUDPBuffers checks the probe reports what the kernel grants: at
// least the kernel's cap (rmem_max/wmem_max) up to what quic-go wants.
func TestProbeUDPBuffers(t *testing.T) {
	b, err := probeUDPBuffers()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("granted recv %d send %d bytes", b.recv, b.send)
	for _, c := range []struct {
		file string
		got  int
	}{{"/proc/sys/net/core/rmem_max", b.recv}, {"/proc/sys/net/core/wmem_max", b.send}} {
		raw, err := os.ReadFile(c.file)
		if err != nil {
			t.Skipf("no %s: %v", c.file, err)
		}
		limit, err := strconv.Atoi(strings.TrimSpace(string(raw)))
		if err != nil {
			t.Fatal(err)
		}
		if want := min(limit, quicUDPBuffer); c.got < want {
			t.Errorf("%s is %d, probe got %d, want ≥ %d", c.file, limit, c.got, want)
		}
		if c.got <= 0 {
			t.Errorf("probe got %d for %s", c.got, c.file)
		}
	}
}
