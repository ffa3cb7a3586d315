// Package testbed builds hosts out of network namespaces on this machine,
// so real sgnode processes talk over the kernel's network stack through
// links of a chosen rate: each host is a namespace with one veth into a
// shared bridge namespace, its uplink shaped by a tbf qdisc on its end,
// its downlink by a tbf qdisc on the bridge's end. (netem is not
// available here, so no added latency.) It needs root and the ip and tc
// commands; Close removes everything, also after a failure.
package testbed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Host is one host to build.
type Host struct {
	Name     string
	UpMbit   int // egress rate
	DownMbit int // ingress rate
}

// Bed is a built set of hosts.
type Bed struct {
	id     string
	bridge string // the bridge namespace
	hosts  map[string]*built
	order  []string
}

type built struct {
	Host
	ns, ip, dev, peerDev string
}

// Available reports why a testbed cannot be built here, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("testbed needs root (network namespaces, tc)")
	}
	for _, c := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("testbed needs %s: %w", c, err)
		}
	}
	return nil
}

// New builds hosts, each at 10.77.0.<i+1>/24 in namespace sg-<id>-<name>.
func New(ctx context.Context, hosts []Host) (_ *Bed, err error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if len(hosts) == 0 || len(hosts) > 200 {
		return nil, fmt.Errorf("testbed: %d hosts (1..200)", len(hosts))
	}
	var rb [3]byte
	_, _ = rand.Read(rb[:])
	b := &Bed{id: hex.EncodeToString(rb[:]), hosts: map[string]*built{}}
	b.bridge = "sg-" + b.id + "-br"
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	if err := b.run(ctx, "ip", "netns", "add", b.bridge); err != nil {
		return nil, err
	}
	if err := b.runAll(ctx,
		[]string{"ip", "-n", b.bridge, "link", "add", "br0", "type", "bridge"},
		[]string{"ip", "-n", b.bridge, "link", "set", "br0", "up"},
	); err != nil {
		return nil, err
	}
	for i, h := range hosts {
		if h.Name == "" || strings.ContainsAny(h.Name, " /") || h.UpMbit <= 0 || h.DownMbit <= 0 {
			return nil, fmt.Errorf("testbed: bad host %+v", h)
		}
		if b.hosts[h.Name] != nil {
			return nil, fmt.Errorf("testbed: host %q twice", h.Name)
		}
		x := &built{Host: h, ns: fmt.Sprintf("sg-%s-%s", b.id, h.Name), ip: fmt.Sprintf("10.77.0.%d", i+1),
			dev: fmt.Sprintf("sg%s%dh", b.id, i), peerDev: fmt.Sprintf("sg%s%db", b.id, i)}
		b.hosts[h.Name], b.order = x, append(b.order, h.Name)
		if err := b.runAll(ctx,
			[]string{"ip", "netns", "add", x.ns},
			[]string{"ip", "link", "add", x.dev, "type", "veth", "peer", "name", x.peerDev},
			[]string{"ip", "link", "set", x.dev, "netns", x.ns},
			[]string{"ip", "link", "set", x.peerDev, "netns", b.bridge},
			[]string{"ip", "-n", x.ns, "addr", "add", x.ip + "/24", "dev", x.dev},
			[]string{"ip", "-n", x.ns, "link", "set", x.dev, "up"},
			[]string{"ip", "-n", x.ns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", b.bridge, "link", "set", x.peerDev, "master", "br0"},
			[]string{"ip", "-n", b.bridge, "link", "set", x.peerDev, "up"},
			tbf(x.ns, x.dev, h.UpMbit),
			tbf(b.bridge, x.peerDev, h.DownMbit),
		); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// tbf shapes dev's egress to mbit, with a burst of a few packets and a
// queue of at most 20 ms: the link, not a deep buffer, sets the pace.
func tbf(ns, dev string, mbit int) []string {
	burst := max(16<<10, mbit*1_000_000/8/250) // at least 4 ms of data: tbf needs rate/HZ
	return []string{"tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf",
		"rate", fmt.Sprintf("%dmbit", mbit), "burst", fmt.Sprint(burst), "latency", "20ms"}
}

func (b *Bed) run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("testbed: %s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (b *Bed) runAll(ctx context.Context, cmds ...[]string) error {
	for _, c := range cmds {
		if err := b.run(ctx, c[0], c[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// Namespace and IP name where host name lives ("" if there is none).
func (b *Bed) Namespace(name string) string {
	if x := b.hosts[name]; x != nil {
		return x.ns
	}
	return ""
}

// IP is host name's address.
func (b *Bed) IP(name string) string {
	if x := b.hosts[name]; x != nil {
		return x.ip
	}
	return ""
}

// Unplug deletes host name's link and namespace: to the others the host
// is gone at once (its processes keep running, cut off; a namespace lives
// on while a process is in it, so the link is deleted first).
func (b *Bed) Unplug(ctx context.Context, name string) error {
	x := b.hosts[name]
	if x == nil {
		return fmt.Errorf("testbed: no host %q", name)
	}
	return b.runAll(ctx,
		[]string{"ip", "-n", b.bridge, "link", "del", x.peerDev},
		[]string{"ip", "netns", "del", x.ns})
}

// Close deletes every namespace the bed made (veths go with them).
func (b *Bed) Close() error {
	var errs []error
	for _, name := range b.order {
		x := b.hosts[name]
		if err := exec.Command("ip", "netns", "del", x.ns).Run(); err != nil && nsExists(x.ns) {
			errs = append(errs, fmt.Errorf("delete namespace %s: %w", x.ns, err))
		}
	}
	if err := exec.Command("ip", "netns", "del", b.bridge).Run(); err != nil && nsExists(b.bridge) {
		errs = append(errs, fmt.Errorf("delete namespace %s: %w", b.bridge, err))
	}
	return errors.Join(errs...)
}

func nsExists(ns string) bool {
	_, err := os.Stat("/var/run/netns/" + ns)
	return err == nil
}
