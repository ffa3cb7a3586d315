// Command sgnode is the sg daemon: one per host or middlebox.
//
//	sgnode init --data DIR     create identity and a commented config file
//	sgnode run  --data DIR     run the daemon
//	sgnode id   --data DIR     print the peer ID
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
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// errUsage marks errors that should exit 2.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	var err error
	switch args[0] {
	case "init":
		err = cmdInit(args[1:], stdout)
	case "run":
		err = cmdRun(ctx, args[1:], stderr)
	case "id":
		err = cmdID(args[1:], stdout)
	case "-h", "--help", "help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "sgnode: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "sgnode:", err)
		return 2
	}
	fmt.Fprintln(stderr, "sgnode:", err)
	return 1
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage: sgnode COMMAND [flags]

Commands:
  init   create the data directory, identity and a default config file
  run    run the daemon
  id     print this node's peer ID

Run 'sgnode COMMAND -h' for a command's flags.
`)
}
