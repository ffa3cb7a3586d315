// Package testenv lets a test say what it needs from the host: a tool on
// PATH, FUSE, root, network namespaces, a guest kernel. Outside CI a
// missing prerequisite skips the test with the reason; under CI=true it
// fails the test, so a CI run cannot pass with its FUSE, NBD, QEMU or
// testbed tests quietly unrun.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Strict reports whether missing prerequisites fail tests rather than
// skip them: under CI=true (or SG_REQUIRE_ALL=1, to check locally).
func Strict() bool {
	return os.Getenv("CI") == "true" || os.Getenv("SG_REQUIRE_ALL") == "1"
}

// Missing ends t for a prerequisite the host lacks: a failure under
// Strict, a skip otherwise. The message names what is missing.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := "missing prerequisite: " + fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatal(msg + " (CI=true: prerequisites are required)")
	}
	t.Skip(msg)
}

// Need ends t through Missing when err (the host's answer to whether
// what is named is available) is not nil.
func Need(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		Missing(t, "%s: %v", what, err)
	}
}

// Tool ends t through Missing unless each named program is on PATH;
// install says how to get them (e.g. "apt-get install qemu-utils").
func Tool(t testing.TB, install string, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			Missing(t, "%s not on PATH (%s)", tool, install)
		}
	}
}

// Root ends t through Missing unless it runs as root.
func Root(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root (%s)", why)
	}
}
