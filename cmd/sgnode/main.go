// Command sgnode is the sg daemon: one per host or middlebox.
//
//	sgnode init --data DIR     create identity and a commented config file
//	sgnode run  --data DIR     run the daemon
//	sgnode id   --data DIR     print the peer ID
//
// Exit codes: 0 success, 1 failure, 2 usage or configuration error.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/internal/cli"
)

// version is set at link time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cli.Execute(ctx, newRootCmd(cli.Version(version), stdout, stderr), args, stdout, stderr)
}

// newRootCmd builds sgnode's command tree; the daemon logs to stderr.
func newRootCmd(version string, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "sgnode",
		Short: "The sg daemon: stores, relays and gathers VM chunks",
		Long: `sgnode is the sg daemon, one per host or middlebox. It keeps this node's
identity and chunk store in a data directory, talks to its peers over QUIC,
and serves sgctl on a control socket.

The data directory is --data, else $SG_DATA, else /var/lib/sg. Create it
with 'sgnode init', then start 'sgnode run' (the packaged systemd unit
does both).

Exit codes: 0 success, 1 failure, 2 usage or configuration error.`,
	}
	root.AddCommand(newInitCmd(stdout), newRunCmd(version, stdout, stderr), newIDCmd(stdout))
	cli.SetVersion(root, version)
	cli.AddManCommand(root, version)
	return root
}

func defaultDataDir() string {
	if d := os.Getenv("SG_DATA"); d != "" {
		return d
	}
	return "/var/lib/sg"
}
