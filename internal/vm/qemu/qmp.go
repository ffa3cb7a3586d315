package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// maxQMPLine bounds one QMP message; replies we use are a few KiB.
const maxQMPLine = 1 << 20

// QMP is a connection to one QEMU monitor. Commands run one at a time.
type QMP struct {
	conn net.Conn
	rd   *bufio.Scanner
	mu   sync.Mutex
	pid  int
}

// QMPError is an error QEMU answered with.
type QMPError struct {
	Command string
	Class   string
	Desc    string
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// DialQMP connects to a QMP socket, reads the greeting and enters command
// mode. ctx bounds the handshake.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", path, err)
	}
	q := &QMP{conn: conn, rd: bufio.NewScanner(conn)}
	q.rd.Buffer(make([]byte, 0, 64<<10), maxQMPLine)
	if uc, ok := conn.(*net.UnixConn); ok {
		q.pid = peerPID(uc)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	var greeting struct {
		QMP *json.RawMessage `json:"QMP"`
	}
	if err := q.readMessage(&greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		if err == nil {
			err = errors.New("no QMP greeting (is this a QMP socket?)")
		}
		return nil, fmt.Errorf("qmp %s: %w", path, err)
	}
	if err := q.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// peerPID is the process at the other end of a unix socket (0 if unknown).
func peerPID(c *net.UnixConn) int {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	var pid int
	_ = raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}

// PID is the QEMU process's ID, from the socket's peer credentials.
func (q *QMP) PID() int { return q.pid }

// Close closes the connection.
func (q *QMP) Close() error { return q.conn.Close() }

// Execute runs one command; out (may be nil) receives its "return" value.
// Asynchronous events that arrive meanwhile are skipped.
func (q *QMP) Execute(ctx context.Context, cmd string, args, out any) error {
	return q.execute(ctx, cmd, args, out, nil)
}

// execute runs one command, passing file's descriptor with it (SCM_RIGHTS)
// if file is not nil.
func (q *QMP) execute(ctx context.Context, cmd string, args, out any, file *os.File) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { q.conn.SetDeadline(time.Now()) })
	defer stop()
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if file != nil {
		uc, ok := q.conn.(*net.UnixConn)
		if !ok {
			return fmt.Errorf("qmp %s: passing a descriptor needs a unix socket", cmd)
		}
		_, _, err = uc.WriteMsgUnix(append(b, '\n'), unix.UnixRights(int(file.Fd())), nil)
	} else {
		_, err = q.conn.Write(append(b, '\n'))
	}
	if err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, ctxErr(ctx, err))
	}
	for {
		var reply struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := q.readMessage(&reply); err != nil {
			return fmt.Errorf("qmp %s: %w", cmd, ctxErr(ctx, err))
		}
		switch {
		case reply.Event != "":
			continue
		case reply.Error != nil:
			return &QMPError{Command: cmd, Class: reply.Error.Class, Desc: reply.Error.Desc}
		case out != nil:
			if err := json.Unmarshal(reply.Return, out); err != nil {
				return fmt.Errorf("qmp %s: reply: %w", cmd, err)
			}
		}
		return nil
	}
}

func (q *QMP) readMessage(v any) error {
	if !q.rd.Scan() {
		if err := q.rd.Err(); err != nil {
			return err
		}
		return errors.New("connection closed by QEMU")
	}
	return json.Unmarshal(q.rd.Bytes(), v)
}

// ctxErr prefers the context's error to the deadline it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Status is the guest's run state ("running", "paused", "inmigrate", ...).
func (q *QMP) Status(ctx context.Context) (string, error) {
	var st struct {
		Status string `json:"status"`
	}
	err := q.Execute(ctx, "query-status", nil, &st)
	return st.Status, err
}

// stateFD is the name the device state's descriptor has in QEMU.
const stateFD = "sg-state"

// saveState writes a stopped guest's device state to path (guest RAM,
// shared, stays out of it). sgnode opens the file and hands QEMU the
// descriptor: QEMU opens nothing and runs no program (a sandboxed QEMU
// may not), and needs no right to path.
func (q *QMP) saveState(ctx context.Context, path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := q.setIgnoreShared(ctx); err != nil {
		return err
	}
	if err := q.execute(ctx, "getfd", map[string]any{"fdname": stateFD}, nil, f); err != nil {
		return err
	}
	return q.migrate(ctx, "migrate", "fd:"+stateFD)
}

// loadState loads a device state from path into a QEMU started with
// -incoming defer. QEMU reads it from a pipe that sgnode fills: it opens
// nothing, and its main loop stays free while a lazily gathered state
// arrives.
func (q *QMP) loadState(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pw.Close() // also ends the copy if QEMU never reads
	if err := q.setIgnoreShared(ctx); err != nil {
		pr.Close()
		return err
	}
	err = q.execute(ctx, "getfd", map[string]any{"fdname": stateFD}, nil, pr)
	pr.Close() // QEMU has its own copy
	if err != nil {
		return err
	}
	copied := make(chan error, 1)
	go func() { // waited for below
		_, err := io.Copy(pw, f)
		pw.Close() // end of the state
		copied <- err
	}()
	err = q.migrate(ctx, "migrate-incoming", "fd:"+stateFD)
	pw.Close()
	if cerr := <-copied; err == nil && cerr != nil && !errors.Is(cerr, os.ErrClosed) {
		err = fmt.Errorf("read device state: %w", cerr)
	}
	return err
}

func (q *QMP) migrate(ctx context.Context, cmd, uri string) error {
	ctx, cancel := context.WithTimeout(ctx, saveTimeout)
	defer cancel()
	if err := q.Execute(ctx, cmd, map[string]any{"uri": uri}, nil); err != nil {
		return err
	}
	return q.waitMigration(ctx)
}

// setIgnoreShared keeps shared memory backends out of the migration
// stream: guest RAM travels as chunks, not inside the device state.
func (q *QMP) setIgnoreShared(ctx context.Context) error {
	return q.Execute(ctx, "migrate-set-capabilities", map[string]any{
		"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}},
	}, nil)
}

// waitMigration polls query-migrate until the migration (out or in) ends.
func (q *QMP) waitMigration(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := q.Execute(ctx, "query-migrate", nil, &st); err != nil {
			return err
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", st.Status, st.ErrorDesc)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
