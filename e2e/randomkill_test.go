package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/workload"
)

// killSeed picks the random moments of the kill tests: SG_KILL_SEED
// repeats a run, else each run draws new ones (logged).
func killSeed(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SG_KILL_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("SG_KILL_SEED: %v", err)
		}
	}
	t.Logf("kill moments from SG_KILL_SEED=%d", seed)
	return rand.New(rand.NewPCG(seed, seed^0x5eed))
}

// killVM is a 96 MiB guest: a few seconds of gather at 100 Mbit/s.
func killVM(seed uint64) workload.Spec {
	s := vmSpec(seed)
	s.MemSize, s.DiskSize = 64<<20, 32<<20
	return s
}

// TestKillEachRoleAtRandomMoment kills sgnode processes with SIGKILL at
// random moments, each role in turn, with the two kinds of redundancy
// (erasure coding with encryption at rest: stripes decoded from sealed
// shards, a sealed gather resumed after a restart);
// the destination always ends with the VM byte for byte, or (the source
// killed before its eviction time) nothing claims it is complete there
// and the VM is evicted again once the source is back.
func TestKillEachRoleAtRandomMoment(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes")
	}
	rng := killSeed(t)
	slowDst := []string{"--ingest-rate", "100Mbit"}

	// The two kinds of redundancy, each with the relays it needs to lose
	// one (one more than its holders need) while it scatters.
	modes := []struct {
		name    string
		args    []string
		relays  int
		striped bool
	}{
		{"4+1 encrypted", []string{"--redundancy", "4+1", "--encrypt"}, 5, true},
		{"replicas 2", []string{"--replicas", "2"}, 3, false},
	}
	nodes := func(relays int) []string {
		names := []string{"src", "dst"}
		for i := range relays {
			names = append(names, fmt.Sprintf("r%d", i+1))
		}
		return names
	}

	// An intermediate killed at any moment of the scatter or the gather,
	// then the source once it is free.
	for _, mode := range modes {
		t.Run("intermediate "+mode.name, func(t *testing.T) {
			names := nodes(mode.relays)
			c := startClusterWith(t, map[string][]string{"dst": slowDst}, names...)
			src, dst := c.Nodes[0], c.Nodes[1]
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			images := addVM(t, ctx, src, "web1", killVM(21))
			victim := c.Nodes[2+rng.IntN(len(names)-2)]
			at := time.Duration(rng.Int64N(int64(4 * time.Second)))
			done := make(chan error, 1)
			var res api.EvictResult
			start := time.Now()
			go func() {
				done <- src.SgctlJSON(ctx, &res, append([]string{"evict", "vm", "web1", "--to", dst.PeerID}, mode.args...)...)
			}()
			time.Sleep(at)
			if err := victim.Kill(); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("eviction with %s killed %v in: %v", victim.Name, at, err)
			}
			if err := src.Kill(); err != nil { // free: nothing exists only there
				t.Fatal(err)
			}
			m := waitGathered(t, ctx, dst, "web1")
			t.Logf("%s killed %v after the start (ET %v), source killed at %v: TMT %v, %d chunks rebuilt from stripes, %d repaired at the source",
				victim.Name, at.Round(time.Millisecond), res.ET, time.Since(start).Round(time.Millisecond), m.Gather.TMT, m.Gather.RebuiltChunks, res.Repaired)
			sameFiles(t, m.Gather.Files, images)
		})
	}

	// The destination killed at a random point of its gather and started
	// again: what it held only in memory is found at the holders again,
	// or decoded from the stripes.
	for _, mode := range modes {
		t.Run("destination "+mode.name, func(t *testing.T) {
			c := startClusterWith(t, map[string][]string{"dst": slowDst}, nodes(mode.relays-1)...)
			src, dst := c.Nodes[0], c.Nodes[1]
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			images := addVM(t, ctx, src, "web1", killVM(22))
			var res api.EvictResult
			if err := src.SgctlJSON(ctx, &res, append([]string{"evict", "vm", "web1", "--to", dst.PeerID}, mode.args...)...); err != nil {
				t.Fatal(err)
			}
			// sgctl verify --replicas 2 asks "may one holder be lost?", of
			// stripes as of replicas.
			var v api.VerifyResult
			if err := src.SgctlJSON(ctx, &v, "verify", res.VMs[0].Manifest, "--replicas", "2"); err != nil {
				t.Fatalf("verify: %v", err)
			}
			t.Logf("verify: %d stripes, %d spare shard(s) at least, tolerates %d lost holder(s); holders %v", v.Stripes, v.MinStripeSpare, v.Tolerates, v.Holders)
			if v.Tolerates < 1 || mode.striped != (v.Stripes > 0 && v.MinStripeSpare == 1) {
				t.Fatalf("verify after %v: %+v", mode.args, v)
			}
			frac := 0.05 + 0.85*rng.Float64()
			waitPresent(t, ctx, dst, res, frac)
			if err := dst.Kill(); err != nil {
				t.Fatal(err)
			}
			if err := dst.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			m := waitGathered(t, ctx, dst, "web1")
			t.Logf("destination killed %.0f%% into its gather, restarted: %d chunks kept from its files, %d rebuilt from stripes, TMT %v",
				100*frac, m.Gather.KeptChunks, m.Gather.RebuiltChunks, m.Gather.TMT)
			sameFiles(t, m.Gather.Files, images)
		})
	}

	// The source killed while it scatters: the eviction fails, the
	// destination does not present the VM as complete, and once the
	// source's sgnode is back the VM is evicted again.
	t.Run("source before its eviction time", func(t *testing.T) {
		c := startClusterWith(t, map[string][]string{"src": {"--ingest-rate", "1Gbit"}}, "src", "dst", "r1", "r2")
		src, dst := c.Nodes[0], c.Nodes[1]
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
		defer cancel()
		images := addVM(t, ctx, src, "web1", killVM(23))
		at := time.Duration(50+rng.Int64N(400)) * time.Millisecond
		done := make(chan error, 1)
		go func() {
			var res api.EvictResult
			done <- src.SgctlJSON(ctx, &res, "evict", "vm", "web1", "--to", dst.PeerID, "--replicas", "2", "--max-rate", "200Mbit")
		}()
		time.Sleep(at)
		if err := src.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err == nil {
			t.Skipf("the eviction finished within %v, before the kill: nothing to test this time", at)
		}
		// The destination gives the migration up once its source's
		// control stream is gone.
		deadline := time.Now().Add(30 * time.Second)
		for {
			var ms []api.Migration
			if err := dst.SgctlJSON(ctx, &ms, "migrations"); err != nil {
				t.Fatal(err)
			}
			if len(ms) > 0 && ms[0].State == api.StateDone {
				t.Fatal("the destination presents a VM whose source died mid-scatter as complete")
			}
			if len(ms) > 0 && ms[0].State == api.StateFailed {
				t.Logf("source killed %v in: the destination failed the migration: %s", at, ms[0].Error)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the destination did not give up the migration of a dead source: %+v", ms)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := src.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitConnected(ctx, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		var res api.EvictResult
		if err := src.SgctlJSON(ctx, &res, "evict", "vm", "web1", "--to", dst.PeerID, "--replicas", "2"); err != nil {
			t.Fatalf("evicting again after the restart: %v", err)
		}
		m := waitGathered(t, ctx, dst, "web1")
		sameFiles(t, m.Gather.Files, images)
	})
}
