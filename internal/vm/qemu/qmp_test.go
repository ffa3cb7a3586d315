package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeQMP serves one connection: a greeting (unless silent), then answers
// each command with reply(cmd), preceded by an asynchronous event.
func fakeQMP(t *testing.T, greet bool, reply func(cmd string) string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if greet {
			c.Write([]byte(`{"QMP": {"version": {}, "capabilities": []}}` + "\n"))
		} else {
			c.Write([]byte(`{"hello": 1}` + "\n"))
		}
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			var req struct {
				Execute string `json:"execute"`
			}
			if json.Unmarshal(sc.Bytes(), &req) != nil {
				return
			}
			c.Write([]byte(`{"event": "STOP", "timestamp": {}}` + "\n" + reply(req.Execute) + "\n"))
		}
	}()
	return path
}

func TestQMPExecute(t *testing.T) {
	path := fakeQMP(t, true, func(cmd string) string {
		switch cmd {
		case "query-status":
			return `{"return": {"status": "paused", "running": false}}`
		case "migrate":
			return `{"error": {"class": "GenericError", "desc": "no way"}}`
		}
		return `{"return": {}}`
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	q, err := DialQMP(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.PID() != os.Getpid() {
		t.Errorf("peer pid %d, want ours (%d)", q.PID(), os.Getpid())
	}
	st, err := q.Status(ctx)
	if err != nil || st != "paused" {
		t.Fatalf("status %q, %v", st, err)
	}
	err = q.Execute(ctx, "migrate", map[string]any{"uri": "exec:true"}, nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "GenericError" || qe.Desc != "no way" {
		t.Fatalf("migrate: %v", err)
	}
}

func TestQMPRefusesOtherSockets(t *testing.T) {
	path := fakeQMP(t, false, func(string) string { return `{"return": {}}` })
	_, err := DialQMP(t.Context(), path)
	if err == nil || !strings.Contains(err.Error(), "no QMP greeting") {
		t.Fatalf("got %v", err)
	}
}

func TestQMPHonoursContext(t *testing.T) {
	path := fakeQMP(t, true, func(cmd string) string {
		if cmd == "query-status" {
			time.Sleep(time.Second) // an answer that comes too late
		}
		return `{"return": {}}`
	})
	q, err := DialQMP(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := q.Status(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the deadline", err)
	}
}

func TestReadConfig(t *testing.T) {
	good := `{"vm":"web1","guest":{"arch":"x86_64","mem_size":1073741824,"memory":[{"id":"mem","size":1073741824}]},"paused_at":"2026-11-22T08:00:00Z"}`
	c, err := ReadConfig(strings.NewReader(good), int64(len(good)))
	if err != nil || c.VM != "web1" || c.Guest.MemSize != 1<<30 || len(c.Guest.Memory) != 1 {
		t.Fatalf("%+v, %v", c, err)
	}
	for name, in := range map[string]string{"not JSON": "{", "no guest": `{"vm":"x"}`, "empty": "", "two documents": good + good} {
		if _, err := ReadConfig(strings.NewReader(in), int64(len(in))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ReadConfig(strings.NewReader(good), maxConfigSize+1); err == nil {
		t.Error("an oversized config was accepted")
	}
}
