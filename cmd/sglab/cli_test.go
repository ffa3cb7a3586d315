package main

import (
	"flag"
	"io"
	"testing"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/internal/cli/clitest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func newTestRoot() *cobra.Command { return newRootCmd("v0.0.0-test", io.Discard) }

func TestHelp(t *testing.T)    { clitest.CheckHelp(t, newTestRoot, *update) }
func TestVersion(t *testing.T) { clitest.CheckVersion(t, newTestRoot, *update) }

func TestBadInputs(t *testing.T) {
	clitest.CheckBadInputs(t, newTestRoot, []clitest.BadInput{
		{Args: []string{"bench", "--size", "1XB"}, Flag: "--size"},
		{Args: []string{"bench", "--size", "1MiB"}, Flag: "--size"},
		{Args: []string{"demo", "--size", "NaN"}, Flag: "--size"},
		{Args: []string{"demo", "--nodes", "1"}, Flag: "--nodes"},
		{Args: []string{"demo", "--replicas", "0"}, Flag: "--replicas"},
		{Args: []string{"demo", "--nodes", "3", "--replicas", "3"}, Flag: "--replicas"},
	}, *update)
}
