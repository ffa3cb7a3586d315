package main

import (
	"flag"
	"slices"
	"testing"
)

func TestReorderUsesTheFlagSet(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Int("replicas", 1, "")
	fs.Bool("json", false, "")
	fs.Bool("direct", false, "")
	fs.String("to", "", "")
	cases := []struct{ in, want []string }{
		{[]string{"FILE", "--replicas", "2", "--json"}, []string{"--replicas", "2", "--json", "FILE"}},
		{[]string{"a", "--direct", "b", "--to", "x"}, []string{"--direct", "--to", "x", "a", "b"}},
		{[]string{"--replicas=3", "F", "--", "-odd"}, []string{"--replicas=3", "F", "-odd"}},
	}
	for _, c := range cases {
		if got := reorder(fs, c.in); !slices.Equal(got, c.want) {
			t.Errorf("reorder(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
