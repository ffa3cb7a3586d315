package simnet

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestLinkTimeline prints what the source wrote to each peer every
// millisecond of an experiment-1 eviction, with the idle time of its
// uplink (a queue drained at the link rate): how docs/results.md's start, end
// and idle figures were read. SG_TIMELINE=130 (the destination's Mbit/s)
// runs it; SG_VM_MIB sizes the VM.
func TestLinkTimeline(t *testing.T) {
	mbps, err := strconv.ParseFloat(os.Getenv("SG_TIMELINE"), 64)
	if err != nil {
		t.Skip("SG_TIMELINE=<destination Mbit/s> runs it")
	}
	synctest.Test(t, func(t *testing.T) {
		c, err := Start(slowDestination(mbps, false, modelVMMiB), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		src := c.nodes[0]
		stop, samples := make(chan struct{}), make(chan []map[int]int64)
		go func() {
			var s []map[int]int64
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for {
				s = append(s, src.conn.sentTo())
				select {
				case <-stop:
					samples <- s
					return
				case <-tick.C:
				}
			}
		}()
		res, err := c.Run()
		close(stop)
		s := <-samples
		if err != nil {
			t.Fatal(err)
		}
		perMs := int64(srcMbps * 1e6 / 8 / 1000)
		var b strings.Builder
		var queue, idle, total int64
		for i := 1; i < len(s); i++ {
			fmt.Fprintf(&b, "%5d ms", i)
			var n int64
			for j := 1; j < len(c.nodes); j++ {
				d := s[i][j] - s[i-1][j]
				n += d
				fmt.Fprintf(&b, " %s %4d KB", c.nodes[j].spec.Name, d/1000)
			}
			total += n
			if queue += n - perMs; queue < 0 {
				idle -= queue
				queue = 0
			}
			fmt.Fprintf(&b, " | queued %4d KB, idle so far %5.1f ms\n", queue/1000, float64(idle)/float64(perMs))
			if time.Duration(i)*time.Millisecond > res.ET+5*time.Millisecond {
				break
			}
		}
		t.Logf("\n%s", b.String())
		t.Logf("ET %v, unique %d bytes (%v at the uplink), sent %d", res.ET, res.UniqueBytes, ideal(res.UniqueBytes, srcMbps), res.Sent("src"))
		if total < res.UniqueBytes {
			t.Errorf("the samples up to ET hold %d bytes, fewer than the %d unique bytes that crossed", total, res.UniqueBytes)
		}
	})
}
