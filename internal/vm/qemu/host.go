package qemu

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// DefaultUser is the account a destination's QEMU runs as when the host
// has it and none is configured; without it, "nobody".
const DefaultUser = "sg-qemu"

// Host is how this host runs QEMU for guests that arrive: local settings
// only, never taken from the network. Safe for concurrent use.
type Host struct {
	// Binary is the QEMU to run; empty: qemu-system-<arch> of the guest's
	// (allow-listed) architecture, looked up in this process's PATH.
	Binary string
	// User is the account QEMU drops to once it has opened the guest's
	// files (-run-with user= or -runas); empty: DefaultUser if it exists,
	// else "nobody"; "root" runs it as root.
	User string
	// SandboxOptional lets a QEMU built without seccomp (no -sandbox) run
	// guests unsandboxed (qemu_sandbox = "optional"); otherwise such a
	// binary is refused, since an escape from its device models would
	// then have every system call.
	SandboxOptional bool

	mu     sync.Mutex
	probed map[string]features // by binary path
}

// features are what an installed QEMU supports, from its -help.
type features struct {
	runWith bool // -run-with user=
	runAs   bool // -runas
	sandbox bool // -sandbox (built with seccomp)
}

// probeTimeout bounds one `qemu -help`.
const probeTimeout = 10 * time.Second

// ErrNoSandbox: the QEMU binary cannot sandbox itself, and the operator
// has not allowed running it without.
var ErrNoSandbox = errors.New("QEMU without a sandbox")

// Command is the binary for arch and the options that confine it: the
// user it drops to and its seccomp sandbox. A binary that can drop
// neither is refused; one without -sandbox too, unless SandboxOptional.
func (h *Host) Command(ctx context.Context, arch string) (bin string, confine []string, err error) {
	bin = h.Binary
	if bin == "" {
		if !binaryRE.MatchString("qemu-system-" + arch) {
			return "", nil, fmt.Errorf("%w: architecture %q", ErrRefused, arch)
		}
		bin = "qemu-system-" + arch
	} else if m := binaryRE.FindStringSubmatch(filepath.Base(bin)); m != nil && m[1] != arch {
		return "", nil, fmt.Errorf("the guest is %s; qemu_binary %s is not", arch, bin)
	}
	if bin, err = exec.LookPath(bin); err != nil {
		return "", nil, fmt.Errorf("QEMU binary: %w", err)
	}
	f, err := h.features(ctx, bin)
	if err != nil {
		return "", nil, err
	}
	name, uid, err := h.user()
	if err != nil {
		return "", nil, err
	}
	// QEMU drops privileges itself, after it has opened the guest's
	// memory, disks, kernel and initrd as root, so none of them needs to
	// be readable by its user; the device state is handed over as an
	// open descriptor.
	dropped := false
	if uid != "0" {
		switch {
		case f.runWith:
			confine, dropped = append(confine, "-run-with", "user="+name), true
		case f.runAs:
			confine, dropped = append(confine, "-runas", name), true
		default:
			return "", nil, fmt.Errorf("%s can neither -run-with user= nor -runas: cannot run it as %s", bin, name)
		}
	}
	if !f.sandbox && !h.SandboxOptional {
		return "", nil, fmt.Errorf("%w: %s has no -sandbox (built without seccomp): not running a guest unsandboxed; set qemu_sandbox = \"optional\" to allow it", ErrNoSandbox, bin)
	}
	if f.sandbox {
		// spawn=deny: no fork or exec (so no -daemonize: sgnode detaches
		// QEMU itself). elevateprivileges=deny also forbids the setuid
		// that drops to the user, so it is set only when there is no drop;
		// after the drop QEMU has no privilege left to raise.
		sb := "on,obsolete=deny,spawn=deny,resourcecontrol=deny"
		if !dropped {
			sb += ",elevateprivileges=deny"
		}
		confine = append(confine, "-sandbox", sb)
	}
	return bin, confine, nil
}

// user resolves the account QEMU runs as.
func (h *Host) user() (name, uid string, err error) {
	name = h.User
	if name == "" {
		name = "nobody"
		if _, err := user.Lookup(DefaultUser); err == nil {
			name = DefaultUser
		}
	}
	u, err := user.Lookup(name)
	if err != nil {
		return "", "", fmt.Errorf("qemu_user: %w", err)
	}
	return name, u.Uid, nil
}

// features probes bin's -help once.
func (h *Host) features(ctx context.Context, bin string) (features, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f, ok := h.probed[bin]; ok {
		return f, nil
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-help").Output()
	if err != nil {
		return features{}, fmt.Errorf("%s -help: %w", bin, err)
	}
	f := features{}
	lines := strings.Split(string(out), "\n")
	for i, line := range lines {
		next := ""
		if i+1 < len(lines) {
			next = lines[i+1]
		}
		switch {
		case strings.HasPrefix(line, "-run-with ") && strings.Contains(line+next, "user="):
			f.runWith = true
		case strings.HasPrefix(line, "-runas "):
			f.runAs = true
		case strings.HasPrefix(line, "-sandbox "):
			f.sandbox = true
		}
	}
	if h.probed == nil {
		h.probed = map[string]features{}
	}
	h.probed[bin] = f
	return f, nil
}
