// Command sgctl controls the local sgnode over its control socket.
//
// Exit codes: 0 success, 1 failure, 2 usage error.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/api"
	"github.com/sgrelay/sg/internal/cli"
)

// version is set at link time with -ldflags "-X main.version=…".
var version = "dev"

// env is what every command gets: its streams and a client.
type env struct {
	stdout, stderr io.Writer
	apiPath        string
	isTerminal     bool // stderr is a terminal: draw progress bars
}

func (e *env) client() *api.Client {
	if e.apiPath == "" {
		return api.NewClient(defaultAPI())
	}
	return api.NewClient(e.apiPath)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr, isTerminal: isTerminal(stderr)}
	root := newRootCmd(e, cli.Version(version))
	adviseErrors(root)
	return cli.Execute(ctx, root, args, stdout, stderr)
}

// newRootCmd builds sgctl's command tree around e.
func newRootCmd(e *env, version string) *cobra.Command {
	root := &cobra.Command{
		Use:   "sgctl",
		Short: "Control the local sgnode",
		Long: `sgctl controls the local sgnode over its control socket: it registers VMs,
evicts them to a destination through intermediates, follows migrations,
and puts and gets files by CID.

The socket is --api, else $SG_API, else $SG_DATA/sgnode.sock, else
/run/sg/sgnode.sock (the packaged service's) if it exists, else
/var/lib/sg/sgnode.sock.

Exit codes: 0 success, 1 failure, 2 usage error.`,
	}
	root.PersistentFlags().StringVar(&e.apiPath, "api", "", "sgnode control `socket` (default: see above)")
	root.AddGroup(&cobra.Group{ID: "vm", Title: "Migrating VMs:"}, &cobra.Group{ID: "files", Title: "Files by CID:"},
		&cobra.Group{ID: "node", Title: "This node:"})
	for _, c := range []*cobra.Command{newVMCmd(e), newEvictCmd(e), newMigrationsCmd(e), newGatherCmd(e), newVerifyCmd(e)} {
		c.GroupID = "vm"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newPutCmd(e), newGetCmd(e), newRmCmd(e)} {
		c.GroupID = "files"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newStatusCmd(e), newPeersCmd(e)} {
		c.GroupID = "node"
		root.AddCommand(c)
	}
	cli.SetVersion(root, version)
	cli.AddManCommand(root, version)
	return root
}

// defaultAPI is the control socket when --api is not given.
func defaultAPI() string {
	if p := os.Getenv("SG_API"); p != "" {
		return p
	}
	if d := os.Getenv("SG_DATA"); d != "" {
		return d + "/sgnode.sock"
	}
	const service = "/run/sg/sgnode.sock" // the systemd unit's RuntimeDirectory
	if _, err := os.Stat(service); err == nil {
		return service
	}
	return "/var/lib/sg/sgnode.sock"
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
