// Package lab starts a cluster of real sgnode processes on loopback: each
// with its own data directory and control socket, a shared cluster peers
// file, and logs kept beside them. End-to-end tests, the README's demo
// (cmd/sglab) and benchmarks drive it; it talks to the nodes only through
// the sgnode and sgctl binaries and the control API, as an operator would.
package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sgrelay/sg/api"
)

// Config describes a cluster.
type Config struct {
	Bin       string   // directory holding the sgnode and sgctl binaries
	Dir       string   // working directory for data dirs, peers file, logs
	Names     []string // one node per name, all in the peers file
	MemBudget string   // per node, e.g. "512MiB"
	LogLevel  string   // sgnode log level
	// Flags adds sgnode run flags per node name, e.g. a slow destination:
	// {"dst": {"--ingest-rate", "200Mbit"}}.
	Flags map[string][]string
	// Hosts places nodes on hosts of their own (a network namespace with
	// an address, see package testbed); nodes not listed run on loopback.
	Hosts map[string]Host
}

// Host is where a node runs: its network namespace and IPv4 address.
type Host struct {
	Namespace string
	IP        string
}

// Cluster is a set of running nodes.
type Cluster struct {
	cfg       Config
	PeersFile string
	Nodes     []*Node
}

// Node is one sgnode process.
type Node struct {
	Name   string
	Dir    string
	Socket string
	PeerID string
	Addr   string // multiaddr with /p2p/
	Log    string // path of its log
	Client *api.Client
	cmd    *exec.Cmd
	done   chan error // Wait's result, once the process exits
	bin    string
	extra  []string
	// namespace is the network namespace the process runs in ("": ours).
	namespace string
}

// Start initialises every node, writes the peers file and starts them.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.MemBudget == "" {
		cfg.MemBudget = "512MiB"
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "info"
	}
	c := &Cluster{cfg: cfg, PeersFile: filepath.Join(cfg.Dir, "peers.txt")}
	var lines []string
	for _, name := range cfg.Names {
		n, err := c.prepare(ctx, name)
		if err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
		lines = append(lines, n.Addr)
	}
	if err := os.WriteFile(c.PeersFile, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	for _, n := range c.Nodes {
		if err := n.start(ctx); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

// prepare creates a node's data dir and identity and picks its port.
func (c *Cluster) prepare(ctx context.Context, name string) (*Node, error) {
	dir := filepath.Join(c.cfg.Dir, name)
	n := &Node{Name: name, Dir: dir, Socket: filepath.Join(dir, "sgnode.sock"), Log: filepath.Join(c.cfg.Dir, name+".log"),
		bin: c.cfg.Bin}
	if out, err := exec.CommandContext(ctx, filepath.Join(c.cfg.Bin, "sgnode"), "init", "--data", dir).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("sgnode init %s: %v: %s", name, err, out)
	}
	out, err := exec.CommandContext(ctx, filepath.Join(c.cfg.Bin, "sgnode"), "id", "--data", dir).Output()
	if err != nil {
		return nil, fmt.Errorf("sgnode id %s: %w", name, err)
	}
	n.PeerID = strings.TrimSpace(string(out))
	ip, port := "127.0.0.1", 4100
	if h, ok := c.cfg.Hosts[name]; ok {
		ip, n.namespace = h.IP, h.Namespace
	} else if port, err = freeUDPPort(); err != nil {
		return nil, err
	}
	n.Addr = fmt.Sprintf("/ip4/%s/udp/%d/quic-v1/p2p/%s", ip, port, n.PeerID)
	n.extra = []string{
		"--listen", fmt.Sprintf("/ip4/%s/udp/%d/quic-v1", ip, port),
		"--peers", c.PeersFile,
		"--mem-budget", c.cfg.MemBudget,
		"--log-level", c.cfg.LogLevel,
	}
	n.extra = append(n.extra, c.cfg.Flags[name]...)
	n.Client = api.NewClient(n.Socket)
	return n, nil
}

// AddOutsider starts a node that is not in the peers file: it knows the
// members (it dials them) but they do not admit it.
func (c *Cluster) AddOutsider(ctx context.Context, name string) (*Node, error) {
	n, err := c.prepare(ctx, name)
	if err != nil {
		return nil, err
	}
	c.Nodes = append(c.Nodes, n)
	return n, n.start(ctx)
}

func freeUDPPort() (int, error) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port, nil
}

func (n *Node) start(ctx context.Context) error {
	logf, err := os.OpenFile(n.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	args := append([]string{"run", "--data", n.Dir}, n.extra...)
	n.cmd = exec.Command(filepath.Join(n.bin, "sgnode"), args...)
	if n.namespace != "" {
		// ip netns exec execs sgnode in place: the PID is sgnode's.
		n.cmd = exec.Command("ip", append([]string{"netns", "exec", n.namespace, filepath.Join(n.bin, "sgnode")}, args...)...)
	}
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", n.Name, err)
	}
	n.done = make(chan error, 1)
	go func() { // owned by the node: ends when the process exits
		n.done <- n.cmd.Wait()
		logf.Close()
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := n.Client.Status(sctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case werr := <-n.done:
			n.done <- werr
			return fmt.Errorf("sgnode %s exited at start (%v); log %s:\n%s", n.Name, werr, n.Log, tail(n.Log))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sgnode %s did not answer on %s within 20s: %v", n.Name, n.Socket, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// WaitConnected waits until every member sees every other member connected
// with a measured RTT.
func (c *Cluster) WaitConnected(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	members := map[string]bool{}
	for _, n := range c.Nodes[:len(c.cfg.Names)] {
		members[n.PeerID] = true
	}
	for {
		ok := true
		for _, n := range c.Nodes[:len(c.cfg.Names)] {
			ps, err := n.Client.Peers(ctx)
			if err != nil {
				return err
			}
			seen := 0
			for _, p := range ps {
				if members[p.ID] && p.Connected && p.RTT > 0 {
					seen++
				}
			}
			ok = ok && seen == len(members)-1
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("cluster did not connect fully in time")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Sgctl runs the sgctl binary against n and returns its stdout.
func (n *Node) Sgctl(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(n.bin, "sgctl"), append([]string{"--api", n.Socket}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("sgctl %s on %s: %w: %s", strings.Join(args, " "), n.Name, err, stderr.String())
	}
	return out, nil
}

// SgctlJSON runs sgctl with --json and decodes its output into v.
func (n *Node) SgctlJSON(ctx context.Context, v any, args ...string) error {
	out, err := n.Sgctl(ctx, append(args, "--json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("sgctl %s: bad JSON: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Kill sends SIGKILL and waits for the process to go.
func (n *Node) Kill() error {
	if n.cmd == nil || n.cmd.Process == nil {
		return nil
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
	n.done <- nil
	return nil
}

// WaitGathered waits until n's latest gather of vm (as a destination) is
// done and returns its migration record; a failed gather is an error.
func (n *Node) WaitGathered(ctx context.Context, vm string) (api.Migration, error) {
	for {
		var ms []api.Migration
		if err := n.SgctlJSON(ctx, &ms, "migrations"); err != nil {
			return api.Migration{}, err
		}
		var latest *api.Migration // the list is oldest first
		for i, m := range ms {
			if m.VM == vm && m.Role == "destination" {
				latest = &ms[i]
			}
		}
		if m := latest; m != nil {
			switch m.State {
			case api.StateFailed:
				return *m, fmt.Errorf("gather of %s failed: %s", vm, m.Error)
			case api.StateDone:
				return *m, nil
			}
		}
		select {
		case <-ctx.Done():
			return api.Migration{}, fmt.Errorf("gather of %s not done: %w", vm, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Logs returns every node's log, each under a header: what a failed test
// prints.
func (c *Cluster) Logs() string {
	var b strings.Builder
	for _, n := range c.Nodes {
		log, _ := os.ReadFile(n.Log)
		fmt.Fprintf(&b, "--- log of %s:\n%s\n", n.Name, log)
	}
	return b.String()
}

// Restart starts n again after Kill or Stop, with the same data directory
// and flags.
func (n *Node) Restart(ctx context.Context) error {
	if n.cmd != nil && n.cmd.ProcessState == nil {
		return fmt.Errorf("sgnode %s is still running", n.Name)
	}
	return n.start(ctx)
}

// PID is the sgnode process's ID (0 if not running).
func (n *Node) PID() int {
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Stop asks n to shut down (SIGTERM) and kills it after 10 s.
func (n *Node) Stop() error {
	if n.cmd == nil || n.cmd.Process == nil {
		return nil
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-n.done:
		n.done <- err
		return err
	case <-time.After(10 * time.Second):
		return n.Kill()
	}
}

// Stop stops every node. A node killed before it could unmount its lazy
// views leaves dead FUSE mounts in its directory: they are detached, so
// the directory can be removed.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		n.Stop()
		detachMountsUnder(n.Dir)
	}
}

// detachMountsUnder lazily unmounts every mount point below dir (as listed
// in /proc/self/mountinfo; best effort, and nothing where it cannot read it).
func detachMountsUnder(dir string) {
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil || dir == "" {
		return
	}
	prefix := filepath.Clean(dir) + string(filepath.Separator)
	for _, line := range strings.Split(string(info), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], prefix) {
			_ = syscall.Unmount(f[4], syscall.MNT_DETACH)
		}
	}
}

// Metric reads one metric's value (the sum over its label sets) from n's
// /metrics endpoint on the control socket.
func (n *Node) Metric(ctx context.Context, name string) (float64, error) {
	text, err := n.Client.Metrics(ctx)
	if err != nil {
		return 0, err
	}
	var sum float64
	found := false
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		var v float64
		fields := strings.Fields(line)
		if _, err := fmt.Sscan(fields[len(fields)-1], &v); err == nil {
			sum += v
			found = true
		}
	}
	if !found {
		return 0, fmt.Errorf("metric %s not found on %s", name, n.Name)
	}
	return sum, nil
}
