package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sgrelay/sg/internal/vm"
)

// ReadConfig reads a guest config region: it comes from the network, so
// an unknown field (a command line, say) is refused by name, and the
// description is checked against the allow-list before anything uses it.
func ReadConfig(r io.ReaderAt, size int64) (Config, error) {
	var c Config
	if size <= 0 || size > maxConfigSize {
		return c, fmt.Errorf("guest config: %d bytes (at most %d)", size, maxConfigSize)
	}
	b := make([]byte, size)
	if _, err := r.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return c, fmt.Errorf("guest config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("guest config: %w", err)
	}
	if dec.More() {
		return c, errors.New("guest config: data after the document")
	}
	if err := vm.CheckName(c.VM); err != nil {
		return c, fmt.Errorf("guest config: %w", err)
	}
	if err := c.Guest.Check(); err != nil {
		return c, fmt.Errorf("guest config: %w", err)
	}
	return c, nil
}

// ResumeConfig says how to start a guest here.
type ResumeConfig struct {
	Host      *Host // binary, user, sandbox: local settings
	Placement Placement
	Log       *slog.Logger
}

// Guest is a QEMU guest started here.
type Guest struct {
	VM        string
	PID       int
	RunDir    string
	Args      []string
	PausedAt  time.Time // at the source
	ResumedAt time.Time // `cont` answered here

	exited chan struct{} // closed once QEMU has exited and been reaped
}

// Downtime is pause at the source to `cont` here.
func (g *Guest) Downtime() time.Duration { return g.ResumedAt.Sub(g.PausedAt) }

// QMP is the guest's monitor socket.
func (g *Guest) QMP() string { return QMPSocket(g.RunDir) }

// Serial is the file its first serial port writes to.
func (g *Guest) Serial() string { return SerialLog(g.RunDir) }

// Resume builds the command line of cfg's guest from its checked
// description (Description.Args) with the regions where rc.Placement
// says, starts the host's QEMU on it, unprivileged and sandboxed where
// the binary can (Host.Command), loads its device state from the state
// region and continues it. QEMU runs in a session of its own, so it
// outlives this call and sgnode; on error it is stopped, so nothing
// half-started claims to be the guest.
func Resume(ctx context.Context, cfg Config, rc ResumeConfig) (*Guest, error) {
	args, handed, err := cfg.Guest.Args(rc.Placement)
	if err != nil {
		return nil, fmt.Errorf("VM %s: %w", cfg.VM, err)
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close() // QEMU has its own copies
		}
	}()
	for _, h := range handed {
		f, err := os.OpenFile(h.Path, h.Flag, 0)
		if err != nil {
			return nil, fmt.Errorf("VM %s: %w", cfg.VM, err)
		}
		files = append(files, f)
	}
	if rc.Host == nil {
		rc.Host = &Host{}
	}
	bin, confine, err := rc.Host.Command(ctx, cfg.Guest.Arch)
	if err != nil {
		return nil, fmt.Errorf("VM %s: %w", cfg.VM, err)
	}
	if !slices.Contains(confine, "-sandbox") && rc.Log != nil {
		rc.Log.Warn("QEMU runs this guest WITHOUT a seccomp sandbox: its binary has no -sandbox (qemu_sandbox = \"optional\")", "vm", cfg.VM, "binary", bin)
	}
	args = append(args, confine...)
	run := rc.Placement.RunDir
	if err := os.MkdirAll(run, 0o700); err != nil {
		return nil, fmt.Errorf("VM %s: run directory: %w", cfg.VM, err)
	}
	_ = os.Remove(QMPSocket(run))
	_ = os.Remove(PIDFile(run))
	g := &Guest{VM: cfg.VM, RunDir: run, Args: append([]string{bin}, args...), PausedAt: cfg.PausedAt}
	if err := g.start(ctx, bin, args, files, filepath.Join(run, "qemu.log")); err != nil {
		return nil, fmt.Errorf("VM %s: start QEMU: %w", cfg.VM, err)
	}
	if err := g.loadAndContinue(ctx, rc.Placement.File(StateRegion)); err != nil {
		g.Stop()
		return nil, fmt.Errorf("VM %s: %w", cfg.VM, err)
	}
	return g, nil
}

// start runs QEMU in a session of its own (sgnode's signals do not reach
// it) and waits until its monitor answers; its output goes to logPath.
// QEMU does not -daemonize: a sandbox that denies spawning forbids the
// fork. files are its descriptors 3, 4, ... A goroutine owned by g reaps
// it when it exits.
func (g *Guest) start(ctx context.Context, bin string, args []string, files []*os.File, logPath string) error {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr, cmd.ExtraFiles = logf, logf, files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	logf.Close() // QEMU has its own copy
	if err != nil {
		return err
	}
	g.PID = cmd.Process.Pid
	g.exited = make(chan struct{})
	go func() { // owned by g: ends when QEMU exits
		_ = cmd.Wait()
		close(g.exited)
	}()
	for {
		q, err := DialQMP(ctx, g.QMP())
		if err == nil {
			q.Close()
			return nil
		}
		select {
		case <-g.exited:
			return fmt.Errorf("QEMU exited: %s", tailOf(logPath))
		case <-ctx.Done():
			g.kill()
			return fmt.Errorf("%w: %s", ctx.Err(), tailOf(logPath))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// loadAndContinue loads the device state from statePath over the guest's
// monitor and lets the guest run.
func (g *Guest) loadAndContinue(ctx context.Context, statePath string) error {
	qctx, cancel := context.WithTimeout(ctx, qmpTimeout)
	defer cancel()
	q, err := DialQMP(qctx, g.QMP())
	if err != nil {
		return err
	}
	defer q.Close()
	if err := q.loadState(ctx, statePath); err != nil {
		return fmt.Errorf("load device state: %w", err)
	}
	if err := q.Execute(qctx, "cont", nil, nil); err != nil {
		return err
	}
	g.ResumedAt = time.Now()
	return nil
}

// Stop quits the guest's QEMU (killing it if its monitor does not answer
// or it does not exit).
func (g *Guest) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), qmpTimeout)
	defer cancel()
	if q, err := DialQMP(ctx, g.QMP()); err == nil {
		_ = q.Execute(ctx, "quit", nil, nil)
		q.Close()
	}
	if g.exited == nil {
		return
	}
	select {
	case <-g.exited:
	case <-time.After(quitTimeout):
		g.kill()
	}
}

// kill ends QEMU at once.
func (g *Guest) kill() {
	if g.PID > 0 {
		_ = syscall.Kill(g.PID, syscall.SIGKILL)
	}
	if g.exited != nil {
		<-g.exited
	}
}

// tailOf is the end of a log file, for error messages.
func tailOf(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 1000 {
		b = b[len(b)-1000:]
	}
	return strings.TrimSpace(string(b))
}

// Rehome moves a running guest onto other files on this host: it pauses
// the guest, saves its device state, calls flush (which must write every
// page the guest dirtied through to where rc.Placement points), starts a
// second QEMU on rc.Placement, loads the state there and quits the first.
// sg uses it once a gather is complete, so the guest runs on plain local
// files and no longer needs sgnode's lazy views. On error the first QEMU
// runs on.
func Rehome(ctx context.Context, g *Guest, cfg Config, rc ResumeConfig, flush func() error) (*Guest, error) {
	qctx, cancel := context.WithTimeout(ctx, qmpTimeout)
	defer cancel()
	q, err := DialQMP(qctx, g.QMP())
	if err != nil {
		return nil, err
	}
	defer q.Close()
	if err := q.Execute(qctx, "stop", nil, nil); err != nil {
		return nil, err
	}
	pausedAt := time.Now()
	next, err := func() (*Guest, error) {
		if err := os.MkdirAll(rc.Placement.RunDir, 0o700); err != nil {
			return nil, err
		}
		statePath := filepath.Join(rc.Placement.RunDir, "rehome.state")
		defer os.Remove(statePath)
		if err := q.saveState(ctx, statePath); err != nil {
			return nil, fmt.Errorf("save device state: %w", err)
		}
		if err := flush(); err != nil {
			return nil, fmt.Errorf("flush guest memory: %w", err)
		}
		local := rc
		file := rc.Placement.File
		local.Placement.File = func(region string) string {
			if region == StateRegion {
				return statePath
			}
			return file(region)
		}
		cfg.PausedAt = pausedAt
		return Resume(ctx, cfg, local)
	}()
	if err != nil {
		if cerr := q.Execute(qctx, "cont", nil, nil); cerr != nil {
			err = errors.Join(err, fmt.Errorf("continue the guest where it was: %w", cerr))
		}
		return nil, fmt.Errorf("VM %s: move onto local files: %w", cfg.VM, err)
	}
	var qe *QMPError // QEMU may close the socket before it answers quit
	if err := q.Execute(qctx, "quit", nil, nil); errors.As(err, &qe) && rc.Log != nil {
		rc.Log.Warn("quit the guest's first QEMU", "vm", cfg.VM, "pid", g.PID, "err", err)
	}
	return next, nil
}
