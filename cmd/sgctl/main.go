// Command sgctl controls the local sgnode over its control socket.
//
// Exit codes: 0 success, 1 failure, 2 usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sgrelay/sg/api"
)

var errUsage = errors.New("usage")

// env is what every command gets: its streams and a client.
type env struct {
	stdout, stderr io.Writer
	apiPath        string
	isTerminal     bool // stderr is a terminal: draw progress bars
}

func (e *env) client() *api.Client { return api.NewClient(e.apiPath) }

type command struct {
	name, summary string
	run           func(ctx context.Context, e *env, args []string) error
}

var commands = []command{
	{"status", "show this node: peer ID, addresses, store usage, uptime", cmdStatus},
	{"peers", "list peers with RTT, zone and free capacity", cmdPeers},
	{"put", "cut a file into chunks and push them to peers; print its CID", cmdPut},
	{"get", "fetch a file by CID from the peers that hold it", cmdGet},
	{"rm", "remove a put's copies from the peers that hold them", cmdRm},
	{"vm", "register VMs (add, list, rm) from images on disk", cmdVM},
	{"evict", "evict VMs: sgctl evict vm NAME... --to PEER", cmdEvict},
	{"migrations", "list running and finished migrations", cmdMigrations},
	{"gather", "gather an existing VM manifest here from the peers that hold it", cmdGather},
	{"verify", "check that every chunk of a manifest is held (and intact) across peers", cmdVerify},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr, apiPath: defaultAPI(), isTerminal: isTerminal(stderr)}
	global := flag.NewFlagSet("sgctl", flag.ContinueOnError)
	global.SetOutput(stderr)
	global.StringVar(&e.apiPath, "api", e.apiPath, "sgnode control socket (or $SG_API)")
	global.Usage = func() { usage(stderr) }
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	args = global.Args()
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, e, args[1:])
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintln(stderr, "sgctl:", err)
			return 2
		}
		fmt.Fprintf(stderr, "sgctl %s: %v\n", c.name, advise(err))
		return 1
	}
	fmt.Fprintf(stderr, "sgctl: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: sgctl [--api SOCKET] COMMAND [flags]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'sgctl COMMAND -h' for a command's flags.")
}

func defaultAPI() string {
	if p := os.Getenv("SG_API"); p != "" {
		return p
	}
	if d := os.Getenv("SG_DATA"); d != "" {
		return d + "/sgnode.sock"
	}
	return "/var/lib/sg/sgnode.sock"
}

// newFlags makes a command's flag set; errors go to stderr.
func newFlags(e *env, name, args string) *flag.FlagSet {
	fs := flag.NewFlagSet("sgctl "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: sgctl %s %s\n", name, args)
		fs.PrintDefaults()
	}
	return fs
}

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return fmt.Sprint(*l) }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func usageOr(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return fmt.Errorf("%w: %v", errUsage, err)
}

func parse(fs *flag.FlagSet, args []string, wantArgs int) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() != wantArgs {
		fs.Usage()
		return fmt.Errorf("%w: want %d argument(s), got %d", errUsage, wantArgs, fs.NArg())
	}
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
