package main

import (
	"flag"
	"io"
	"testing"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/internal/cli/clitest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func newTestRoot() *cobra.Command {
	return newRootCmd(&env{stdout: io.Discard, stderr: io.Discard, apiPath: "/nonexistent/sgnode.sock"}, "v0.0.0-test")
}

func TestHelp(t *testing.T)    { clitest.CheckHelp(t, newTestRoot, *update) }
func TestVersion(t *testing.T) { clitest.CheckVersion(t, newTestRoot, *update) }

// Every bad value exits 2 before sgctl talks to the node, naming the flag
// and giving an example.
func TestBadInputs(t *testing.T) {
	clitest.CheckBadInputs(t, newTestRoot, []clitest.BadInput{
		{Args: []string{"put", "f", "--chunk-size", "3"}, Flag: "--chunk-size"},
		{Args: []string{"put", "f", "--chunk-size", "NaN"}, Flag: "--chunk-size"},
		{Args: []string{"put", "f", "--chunk-size", "2MiB"}, Flag: "--chunk-size"},
		{Args: []string{"put", "f", "--chunk-size", "64Kb"}, Flag: "--chunk-size"},
		{Args: []string{"put", "f", "--replicas", "-3"}, Flag: "--replicas"},
		{Args: []string{"put", "f", "--replicas", "0"}, Flag: "--replicas"},
		{Args: []string{"put", "f", "--expire", "-1h"}, Flag: "--expire"},
		{Args: []string{"put"}, Flag: "FILE"},
		{Args: []string{"evict", "vm", "a", "--to", "X", "--max-rate", "100"}, Flag: "--max-rate"},
		{Args: []string{"evict", "vm", "a", "--to", "X", "--max-rate", "NaN"}, Flag: "--max-rate"},
		{Args: []string{"evict", "vm", "a", "--to", "X", "--max-rate", "Inf"}, Flag: "--max-rate"},
		{Args: []string{"evict", "vm", "a", "--to", "X", "--max-rate", "-1Gbit"}, Flag: "--max-rate"},
		{Args: []string{"evict", "vm", "a", "--to", "X", "--max-rate", "100M"}, Flag: "--max-rate"},
		{Args: []string{"evict", "vm", "a", "--to", "X", "--replicas", "-3"}, Flag: "--replicas"},
		{Args: []string{"evict", "vm", "a", "--to", "X", "--disk-chunk", "3"}, Flag: "--disk-chunk"},
		{Args: []string{"evict", "vm", "a"}, Flag: "--to"},
		{Args: []string{"evict", "vm", "--to", "X"}, Flag: "VM name"},
		{Args: []string{"get", "CID"}, Flag: "--output"},
		{Args: []string{"verify", "CID", "--replicas", "0"}, Flag: "--replicas"},
	}, *update)
}

// A command line sgctl does not know is a usage error too.
func TestUnknownIsUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"frob"}, {"vm"}, {"vm", "frob"}, {"evict"}, {"put", "f", "--bogus"}, {"status", "extra"}, {"-direct"}} {
		if r := clitest.Run(newTestRoot, args...); r.Code != 2 || r.Stderr == "" {
			t.Errorf("sgctl %q: exit %d, stderr %q; want exit 2 with a message", args, r.Code, r.Stderr)
		}
	}
}

// Completion scripts come from the same tree, for each shell.
func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		r := clitest.Run(newTestRoot, "completion", sh)
		if r.Code != 0 || len(r.Stdout) < 1000 {
			t.Errorf("completion %s: exit %d, %d bytes", sh, r.Code, len(r.Stdout))
		}
	}
}
