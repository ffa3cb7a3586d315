package qemu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeQEMU writes an executable qemu-system-<arch> into a directory put
// first on PATH, printing help as given.
func fakeQEMU(t *testing.T, arch, help string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "qemu-system-"+arch)
	if err := os.WriteFile(path, []byte("#!/bin/sh\ncat <<'EOF'\n"+help+"\nEOF\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return path
}

func TestHostCommandIsLocal(t *testing.T) {
	ctx := context.Background()
	newHelp := "-run-with [async-teardown=on|off][,chroot=dir][user=username|uid:gid]\n-sandbox on[,obsolete=allow|deny]"
	bin := fakeQEMU(t, "x86_64", newHelp)

	h := &Host{User: "nobody"}
	got, confine, err := h.Command(ctx, "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	if got != bin || !slices.Equal(confine, []string{"-run-with", "user=nobody", "-sandbox", "on,obsolete=deny,spawn=deny,resourcecontrol=deny"}) {
		t.Fatalf("%s %q", got, confine)
	}
	// Root: no drop, so setuid can be denied too.
	_, confine, err = (&Host{User: "root"}).Command(ctx, "x86_64")
	if err != nil || !slices.Equal(confine, []string{"-sandbox", "on,obsolete=deny,spawn=deny,resourcecontrol=deny,elevateprivileges=deny"}) {
		t.Fatalf("%q %v", confine, err)
	}
	// An older QEMU: -runas. Without -sandbox in its help it is refused,
	// saying why and which setting allows it; with that setting it runs
	// without a sandbox.
	fakeQEMU(t, "aarch64", "-runas user      change to user id user just before starting the VM")
	if _, confine, err = (&Host{User: "nobody"}).Command(ctx, "aarch64"); !errors.Is(err, ErrNoSandbox) ||
		!strings.Contains(err.Error(), `qemu_sandbox = "optional"`) {
		t.Fatalf("a QEMU without -sandbox: %q %v, want ErrNoSandbox naming qemu_sandbox", confine, err)
	}
	_, confine, err = (&Host{User: "nobody", SandboxOptional: true}).Command(ctx, "aarch64")
	if err != nil || !slices.Equal(confine, []string{"-runas", "nobody"}) {
		t.Fatalf("%q %v", confine, err)
	}
	// Optional does not leave out a sandbox the binary has.
	_, confine, err = (&Host{User: "nobody", SandboxOptional: true}).Command(ctx, "x86_64")
	if err != nil || !slices.Contains(confine, "-sandbox") {
		t.Fatalf("%q %v", confine, err)
	}
	// The architecture picks only among qemu-system-* binaries; a
	// configured binary for another one is refused.
	if _, _, err := h.Command(ctx, "../../bin/sh"); !errors.Is(err, ErrRefused) {
		t.Fatalf("path as an architecture: %v", err)
	}
	if _, _, err := (&Host{Binary: bin}).Command(ctx, "aarch64"); err == nil {
		t.Fatal("an x86_64 binary accepted for an aarch64 guest")
	}
	if _, _, err := (&Host{User: "no-such-user-here"}).Command(ctx, "x86_64"); err == nil {
		t.Fatal("an unknown user accepted")
	}
	// A QEMU that cannot drop privileges is not run as root behind the
	// operator's back.
	fakeQEMU(t, "riscv64", "-sandbox on")
	if _, _, err := (&Host{User: "nobody"}).Command(ctx, "riscv64"); err == nil {
		t.Fatal("a QEMU without -runas or -run-with accepted")
	}
}
