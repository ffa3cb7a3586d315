// Package clitest runs the command trees of sgnode, sgctl and sglab in
// process and compares what they print with golden files, so that a
// change of help, version or error text shows in review as a diff of
// testdata/*.golden (rewritten by go test -update).
package clitest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/internal/cli"
)

// Result is one run of a command line.
type Result struct {
	Code           int
	Stdout, Stderr string
}

// Run executes args on a fresh tree from newRoot.
func Run(newRoot func() *cobra.Command, args ...string) Result {
	var out, errb bytes.Buffer
	code := cli.Execute(context.Background(), newRoot(), args, &out, &errb)
	return Result{code, stable(out.String()), stable(errb.String())}
}

// stable replaces what depends on the toolchain that built the test.
func stable(s string) string {
	return strings.ReplaceAll(s, runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH, "GO OS/ARCH")
}

// Golden compares got with the file at path, or rewrites the file when
// update is set.
func Golden(t *testing.T, path, got string, update bool) {
	t.Helper()
	if update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// Commands lists the path of every command of the tree that help shows
// (hidden ones too: they are run by scripts), root first.
func Commands(root *cobra.Command) [][]string {
	cli.Prepare(root)
	var out [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		out = append(out, path)
		for _, s := range c.Commands() {
			walk(s, append(append([]string(nil), path...), s.Name()))
		}
	}
	walk(root, nil)
	return out
}

// CheckHelp runs "--help" on every command of the tree and "help PATH"
// too: both print the same text to stdout, nothing to stderr, and exit 0;
// the text is testdata/help/<binary>[_<command>...].golden.
func CheckHelp(t *testing.T, newRoot func() *cobra.Command, update bool) {
	t.Helper()
	name := newRoot().Name()
	for _, path := range Commands(newRoot()) {
		file := strings.Join(append([]string{name}, path...), "_")
		t.Run(file, func(t *testing.T) {
			r := Run(newRoot, append(append([]string(nil), path...), "--help")...)
			if r.Code != cli.ExitOK || r.Stderr != "" || r.Stdout == "" {
				t.Fatalf("%s --help: exit %d, stderr %q, stdout %d bytes; want exit 0, help on stdout only", file, r.Code, r.Stderr, len(r.Stdout))
			}
			Golden(t, filepath.Join("testdata", "help", file+".golden"), r.Stdout, update)
			if len(path) == 0 {
				return
			}
			h := Run(newRoot, append([]string{"help"}, path...)...)
			if h.Code != cli.ExitOK || h.Stdout != r.Stdout {
				t.Errorf("help %s: exit %d, and its text differs from --help's:\n%s", strings.Join(path, " "), h.Code, h.Stdout)
			}
		})
	}
}

// CheckVersion checks --version and the version command against
// testdata/version.golden.
func CheckVersion(t *testing.T, newRoot func() *cobra.Command, update bool) {
	t.Helper()
	a, b := Run(newRoot, "--version"), Run(newRoot, "version")
	if a.Code != 0 || b.Code != 0 || a.Stdout != b.Stdout || a.Stderr+b.Stderr != "" {
		t.Fatalf("--version %+v and version %+v: want the same line on stdout, exit 0", a, b)
	}
	Golden(t, filepath.Join("testdata", "version.golden"), a.Stdout, update)
}

// BadInput is a command line that must be refused as a usage error.
type BadInput struct {
	Args []string
	Flag string // the flag (or argument) the message must name
}

// CheckBadInputs runs every bad input: each exits 2, names its flag and
// gives an example ("e.g."); their messages together are
// testdata/errors.golden.
func CheckBadInputs(t *testing.T, newRoot func() *cobra.Command, cases []BadInput, update bool) {
	t.Helper()
	var all strings.Builder
	for _, c := range cases {
		r := Run(newRoot, c.Args...)
		line := strings.Join(c.Args, " ")
		if r.Code != cli.ExitUsage || r.Stdout != "" {
			t.Errorf("%s: exit %d, stdout %q; want exit 2 and nothing on stdout", line, r.Code, r.Stdout)
		}
		if !strings.Contains(r.Stderr, c.Flag) || !strings.Contains(r.Stderr, "e.g.") {
			t.Errorf("%s: %q does not name %s with an example", line, r.Stderr, c.Flag)
		}
		all.WriteString("$ " + line + "\n" + r.Stderr + "\n")
	}
	Golden(t, filepath.Join("testdata", "errors.golden"), all.String(), update)
}
