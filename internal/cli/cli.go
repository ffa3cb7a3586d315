// Package cli is what sgnode, sgctl and sglab share on the command line:
// running a cobra command tree with the exit codes operators script
// against (0 success, 1 failure, 2 usage error), the version, flag values
// for sizes, rates and bounded numbers, and man pages generated from the
// same command definitions as --help.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// UsageError is a command line the program cannot act on: a bad flag
// value, a missing argument, an unknown command. It exits 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef makes a UsageError.
func Usagef(format string, a ...any) error {
	return &UsageError{fmt.Errorf(format, a...)}
}

// Execute runs root with args, writing help and results to stdout and
// errors to stderr, and returns the exit code. A usage error is printed
// with a pointer to the failing command's --help.
func Execute(ctx context.Context, root *cobra.Command, args []string, stdout, stderr io.Writer) int {
	root.SetOut(stdout) // before Prepare: the completion command keeps the writer it sees
	root.SetErr(stderr)
	Prepare(root)
	root.SetContext(ctx)
	root.SetArgs(args)
	cmd, err := groupError(root, args)
	if err == nil {
		cmd, err = root.ExecuteC()
	}
	if err == nil {
		return ExitOK
	}
	if cmd == nil {
		cmd = root
	}
	var ue *UsageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", cmd.CommandPath(), err, cmd.CommandPath())
		return ExitUsage
	}
	fmt.Fprintf(stderr, "%s: %v\n", cmd.CommandPath(), err)
	return ExitFailure
}

// Prepare makes every command of the tree report its errors as Execute
// expects: flag and argument errors become usage errors, and errors are
// printed once, by Execute. It adds the help and completion commands
// now rather than at execution, so that man pages and tests see them.
// Preparing a tree twice is harmless.
func Prepare(root *cobra.Command) {
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	walk(root, func(c *cobra.Command) {
		if c.Annotations["cli.prepared"] != "" {
			return
		}
		if c.Annotations == nil {
			c.Annotations = map[string]string{}
		}
		c.Annotations["cli.prepared"] = "yes"
		c.SilenceErrors, c.SilenceUsage = true, true
		c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &UsageError{err} })
		if args := c.Args; args != nil {
			c.Args = func(c *cobra.Command, a []string) error {
				if err := args(c, a); err != nil {
					if ex, _, _ := strings.Cut(strings.TrimSpace(c.Example), "\n"); ex != "" {
						err = fmt.Errorf("%w, e.g. %s", err, ex)
					}
					return &UsageError{err}
				}
				return nil
			}
		}
	})
}

// groupError refuses a command line that names a command which only
// groups others (sgctl vm) without one of them, or with an unknown one:
// cobra would print the help and exit 0. Help and version flags pass.
// It is a check before cobra runs rather than a RunE on the group, which
// would make the group's usage read "sgctl vm [flags]".
func groupError(root *cobra.Command, args []string) (*cobra.Command, error) {
	if slices.Contains(args, cobra.ShellCompRequestCmd) || slices.Contains(args, cobra.ShellCompNoDescRequestCmd) {
		return nil, nil // a shell asking for completions: cobra adds that command as it runs
	}
	c, rest, err := root.Find(args)
	if err != nil {
		return c, &UsageError{err} // an unknown command of root
	}
	if c.Runnable() || !c.HasSubCommands() {
		return nil, nil
	}
	c.InitDefaultHelpFlag()
	c.InitDefaultVersionFlag()
	// The group's own flags are strings and booleans (--api, --help):
	// parsing them here as well as in cobra sets the same values.
	fs := pflag.NewFlagSet(c.Name(), pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.AddFlagSet(c.Flags())
	fs.AddFlagSet(c.InheritedFlags())
	if fs.Parse(rest) != nil {
		return nil, nil // cobra reports it
	}
	for _, f := range []string{"help", "version"} {
		if fl := fs.Lookup(f); fl != nil && fl.Changed {
			return nil, nil
		}
	}
	if fs.NArg() > 0 {
		msg := fmt.Sprintf("unknown command %q for %q", fs.Arg(0), c.CommandPath())
		if s := c.SuggestionsFor(fs.Arg(0)); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return c, &UsageError{errors.New(msg)}
	}
	var names []string
	for _, s := range c.Commands() {
		if s.IsAvailableCommand() && s.Name() != "help" && s.Name() != "completion" {
			names = append(names, s.Name())
		}
	}
	return c, Usagef("missing command (%s)", strings.Join(names, ", "))
}

func walk(c *cobra.Command, f func(*cobra.Command)) {
	f(c)
	for _, s := range c.Commands() {
		walk(s, f)
	}
}

// ExactArgs wants exactly the named positional arguments.
func ExactArgs(names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return fmt.Errorf("want %s, got %d argument(s)", strings.Join(names, " "), len(args))
		}
		return nil
	}
}

// MinArgs wants at least n positional arguments, described by what.
func MinArgs(n int, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) < n {
			return fmt.Errorf("want %s", what)
		}
		return nil
	}
}

// Version is the version to report: the one set at link time with
// -ldflags "-X main.version=…", else the main module's from the build
// information (a tagged module version, or the VCS revision of a build
// from a checkout), else "dev".
func Version(linked string) string {
	if linked != "" && linked != "dev" {
		return linked
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		return "dev-" + rev + dirty
	}
	return "dev"
}

// SetVersion gives root a --version flag and a version command, both
// printing "NAME version VERSION (GO OS/ARCH)". It keeps cobra's own
// version text: a template of ours would link text/template's
// reflection, which keeps every method of the binary (5 MB of sgnode).
func SetVersion(root *cobra.Command, version string) {
	root.Version = fmt.Sprintf("%s (%s %s/%s)", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	line := fmt.Sprintf("%s version %s\n", root.Name(), root.Version)
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			_, err := io.WriteString(c.OutOrStdout(), line)
			return err
		},
	})
}

// AddManCommand adds the hidden "man DIR" command that writes a man page
// for every command of root, section 1, for packaging.
func AddManCommand(root *cobra.Command, version string) {
	root.AddCommand(&cobra.Command{
		Use:    "man DIR",
		Short:  "Write man pages for every command to DIR",
		Hidden: true,
		Args:   ExactArgs("DIR"),
		RunE: func(c *cobra.Command, args []string) error {
			Prepare(root)
			root.DisableAutoGenTag = true
			return doc.GenManTree(root, &doc.GenManHeader{Section: "1", Source: "sg " + version, Manual: "sg manual"}, args[0])
		},
	})
}
