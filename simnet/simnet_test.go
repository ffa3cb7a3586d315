package simnet

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/sgrelay/sg/internal/workload"
)

// vmSpec is a generated VM of mib MiB of memory: 30% zero, 10% repeated.
func vmSpec(name string, seed uint64, mib int64) VMSpec {
	return VMSpec{Name: name, Spec: workload.Spec{Seed: seed, BaseSeed: 1, MemSize: mib << 20, PageSize: 4096,
		ZeroFrac: 0.3, RepeatFrac: 0.1}}
}

func TestSmallEviction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		topo := &Topology{
			Nodes: []NodeSpec{
				{Name: "src", Role: Source, UpMbps: 1000, DownMbps: 1000},
				{Name: "dst", Role: Destination, UpMbps: 1000, DownMbps: 200},
				{Name: "mid", Role: Intermediate, UpMbps: 1000, DownMbps: 1000},
			},
			Latency: LatencySpec{Default: Duration(time.Millisecond)},
			VMs:     []VMSpec{vmSpec("vm", 1, 128)},
			Gather:  GatherSpec{Verify: true, Trace: TraceSpec{Reads: 200, Think: Duration(time.Millisecond)}},
		}
		res, err := Run(topo, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		reads, faults := res.DemandReads()
		t.Logf("ET %v TMT %v downtime %v unique %d sent %v holders %v reads %d faults %d", res.ET, res.TMT, res.Downtime, res.UniqueBytes, res.LinkBytes, res.HolderBytes, reads, faults)
		if !res.Verified {
			t.Fatal("not verified")
		}
	})
}
