package chunkstore

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sgrelay/sg/internal/chunk"
)

// ingestEnv makes the test binary act as an ingesting process that the
// crash test kills: it Puts chunks forever, Syncs every 16, and prints the
// number of the last chunk made durable.
const ingestEnv = "SG_CHUNKSTORE_INGEST_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(ingestEnv); dir != "" {
		ingestUntilKilled(dir)
		return
	}
	os.Exit(m.Run())
}

func ingestUntilKilled(dir string) {
	d, err := OpenDisk(DiskConfig{Dir: dir, Budget: 1 << 30, SegmentSize: 4 << 20})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out := bufio.NewWriter(os.Stdout)
	deadline := time.Now().Add(time.Minute) // bounded even if never killed
	for i := 0; time.Now().Before(deadline); i++ {
		id, data := testChunk(i, 4096+i%3*4096)
		if err := d.Put(id, data); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if i%16 == 15 {
			if err := d.Sync(); err != nil {
				os.Exit(1)
			}
			fmt.Fprintln(out, i)
			out.Flush()
		}
	}
	os.Exit(0)
}

func TestDiskSurvivesKill9MidIngest(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	dir := t.TempDir()
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), ingestEnv+"="+dir)
		stdout, err := cmd.StdoutPipe()
		must(t, err)
		must(t, cmd.Start())
		sc := bufio.NewScanner(stdout)
		durable := -1
		// Let it ingest a while (more each round), then kill -9 between
		// arbitrary syscalls.
		for sc.Scan() {
			n, err := strconv.Atoi(sc.Text())
			must(t, err)
			durable = n
			if durable >= 2000*(round+1) {
				break
			}
		}
		must(t, cmd.Process.Signal(syscall.SIGKILL))
		cmd.Wait()
		if durable < 0 {
			t.Fatal("ingester made nothing durable")
		}

		d, err := OpenDisk(DiskConfig{Dir: dir, Budget: 1 << 30, SegmentSize: 4 << 20})
		must(t, err)
		// Every chunk it reports is intact.
		bad := 0
		d.Range(func(id chunk.ID, _ int) bool {
			got, err := d.Get(id, nil)
			if err != nil || chunk.Sum(got) != id {
				bad++
			}
			return true
		})
		// Every chunk acknowledged as durable is there.
		for i := 0; i <= durable; i++ {
			id, _ := testChunk(i, 4096+i%3*4096)
			if !d.Has(id) {
				t.Fatalf("round %d: chunk %d was synced but is gone", round, i)
			}
		}
		st := d.Stats()
		t.Logf("round %d: killed after %d durable chunks; reopened with %d chunks, %d torn bytes dropped",
			round, durable+1, st.Chunks, d.Dropped())
		must(t, d.Close())
		if bad > 0 {
			t.Fatalf("round %d: %d chunks failed verification after kill -9", round, bad)
		}
	}
}
