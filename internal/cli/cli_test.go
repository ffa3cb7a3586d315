package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestVersion(t *testing.T) {
	if v := Version("v1.2.3"); v != "v1.2.3" {
		t.Errorf("Version(v1.2.3) = %q", v)
	}
	if v := Version("dev"); !strings.HasPrefix(v, "dev") && !strings.HasPrefix(v, "v") {
		t.Errorf("Version(dev) = %q, want dev[-REVISION] or the module's version", v)
	}
}

// tree is "t [--api S] group {a [--n N]}".
func tree(ran *bool) *cobra.Command {
	root := &cobra.Command{Use: "t"}
	root.PersistentFlags().String("api", "", "")
	group := &cobra.Command{Use: "group"}
	var n Int
	a := &cobra.Command{Use: "a", Args: cobra.NoArgs, Example: "  t group a --n 2", RunE: func(*cobra.Command, []string) error {
		*ran = true
		return nil
	}}
	IntVar(a.Flags(), &n, "n", 1, 1, 9, "--n 2", "")
	group.AddCommand(a)
	root.AddCommand(group)
	return root
}

func TestExitCodes(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		ran  bool
		msg  string
	}{
		{[]string{"group", "a"}, ExitOK, true, ""},
		{[]string{"--api", "x", "group", "a", "--n", "3"}, ExitOK, true, ""},
		{[]string{"group", "--help"}, ExitOK, false, ""},
		{[]string{}, ExitUsage, false, "missing command (group)"},
		{[]string{"--api", "x", "group"}, ExitUsage, false, "t group: missing command (a)"},
		{[]string{"group", "b"}, ExitUsage, false, `unknown command "b" for "t group"`},
		{[]string{"grop"}, ExitUsage, false, `unknown command "grop" for "t"`},
		{[]string{"group", "a", "extra"}, ExitUsage, false, "e.g. t group a --n 2"},
		{[]string{"group", "a", "--n", "10"}, ExitUsage, false, `invalid argument "10" for "--n" flag`},
		{[]string{"group", "a", "--m"}, ExitUsage, false, "unknown flag: --m"},
	} {
		var ran bool
		var out, errb bytes.Buffer
		code := Execute(context.Background(), tree(&ran), c.args, &out, &errb)
		if code != c.code || ran != c.ran || !strings.Contains(errb.String(), c.msg) {
			t.Errorf("t %q: exit %d, ran %v, stderr %q; want exit %d, ran %v, %q", c.args, code, ran, errb.String(), c.code, c.ran, c.msg)
		}
		if code == ExitUsage && !strings.Contains(errb.String(), "--help' for usage") {
			t.Errorf("t %q: %q does not point to --help", c.args, errb.String())
		}
	}
}
