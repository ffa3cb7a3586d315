package qemu

import (
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sgrelay/sg/internal/testenv"
)

// TestResumeRunsUnprivilegedAndSandboxed saves a small guest's device
// state at a "source" QEMU (through a descriptor sgnode hands over) and
// resumes it with Resume, its disk a file in a directory only root may
// enter: QEMU must run as the configured user, under seccomp, with the
// guest running (its disk, handed as descriptors, activated at `cont`),
// and no -daemonize.
func TestResumeRunsUnprivilegedAndSandboxed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts QEMU")
	}
	testenv.Tool(t, "apt-get install qemu-system-x86", "qemu-system-x86_64")
	testenv.Root(t, "QEMU drops to another user")
	nobody, err := user.Lookup("nobody")
	if err != nil {
		testenv.Missing(t, "user nobody: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	src := t.TempDir()
	mem := filepath.Join(src, "mem")
	if err := os.WriteFile(mem, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(mem, 64<<20); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(src, "disk")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	argv := []string{"qemu-system-x86_64", "-accel", "tcg", "-nodefaults", "-machine", "q35,memory-backend=mem", "-m", "64M",
		"-object", "memory-backend-file,id=mem,size=64M,mem-path=" + mem + ",share=on",
		"-drive", "file=" + disk + ",format=raw,if=virtio,cache=none"}
	m, err := ParseArgs(argv)
	if err != nil {
		t.Fatal(err)
	}
	qmp := filepath.Join(src, "qmp.sock")
	srcQEMU := exec.Command(argv[0], append(argv[1:], "-display", "none", "-qmp", "unix:"+qmp+",server=on,wait=off")...)
	if err := srcQEMU.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srcQEMU.Process.Kill(); _ = srcQEMU.Wait() })
	var q *QMP
	for q == nil {
		if q, err = DialQMP(ctx, qmp); err != nil {
			select {
			case <-ctx.Done():
				t.Fatal(err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	defer q.Close()
	if err := q.Execute(ctx, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	for _, d := range []string{"lazy", "run"} {
		if err := os.Mkdir(filepath.Join(dst, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.saveState(ctx, filepath.Join(dst, "lazy", StateRegion)); err != nil {
		t.Fatal(err)
	}
	for from, to := range map[string]string{mem: "mem", disk: DiskRegion(0)} {
		if err := os.Rename(from, filepath.Join(dst, "lazy", to)); err != nil {
			t.Fatal(err)
		}
	}
	g, err := Resume(ctx, Config{VM: "t", Guest: m.Guest, PausedAt: time.Now()}, ResumeConfig{
		Host: &Host{User: "nobody"},
		Placement: Placement{
			Dirs:   []string{dst},
			File:   func(r string) string { return filepath.Join(dst, "lazy", r) },
			Disk:   func(r string) Disk { return Disk{Path: filepath.Join(dst, "lazy", r)} },
			RunDir: filepath.Join(dst, "run"),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	status, err := os.ReadFile("/proc/" + strconv.Itoa(g.PID) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Uid:\t" + nobody.Uid + "\t" + nobody.Uid, "Seccomp:\t2"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("QEMU (pid %d) status lacks %q:\n%s", g.PID, want, status)
		}
	}
	joined := strings.Join(g.Args, " ")
	for _, want := range []string{"-runas nobody", "-sandbox on,obsolete=deny,spawn=deny,resourcecontrol=deny"} {
		if !strings.Contains(joined, want) && !strings.Contains(joined, strings.Replace(want, "-runas ", "-run-with user=", 1)) {
			t.Errorf("args lack %q: %s", want, joined)
		}
	}
	if strings.Contains(joined, "-daemonize") {
		t.Errorf("QEMU daemonizes: %s", joined)
	}
	q2, err := DialQMP(ctx, g.QMP())
	if err != nil {
		t.Fatal(err)
	}
	defer q2.Close()
	if st, err := q2.Status(ctx); err != nil || st != "running" {
		t.Fatalf("resumed guest is %q, %v", st, err)
	}
	q2.Close()
	g.Stop()
	select {
	case <-g.exited:
	default:
		t.Fatal("QEMU still runs after Stop")
	}
}
