package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
)

// fileConfig is sgnode.toml. Every key is optional; flags override it.
type fileConfig struct {
	Listen     []string `toml:"listen"`
	PeersFile  string   `toml:"peers_file"`
	Allow      []string `toml:"allow"`
	AllowAny   bool     `toml:"allow_any"`
	Zone       string   `toml:"zone"`
	API        string   `toml:"api"`
	Metrics    string   `toml:"metrics"`
	MemBudget  string   `toml:"mem_budget"`
	DiskBudget string   `toml:"disk_budget"`
	IngestRate string   `toml:"ingest_rate"`
	Uplink     string   `toml:"uplink"`
	Downlink   string   `toml:"downlink"`
	PushQuota  string   `toml:"push_quota"`
	HoldLease  string   `toml:"hold_lease"`
	Pprof      bool     `toml:"pprof"`
	// RequestRate is chunk IDs/s per peer in have and get requests; nil:
	// the default, 0: no cap.
	RequestRate *int64 `toml:"request_rate"`
	// Incoming migrations: per source, how many may be open here at once
	// and their total size; per migration, its chunk positions.
	IncomingPerPeer     int    `toml:"incoming_per_peer"`
	IncomingSizePerPeer string `toml:"incoming_size_per_peer"`
	IncomingMaxChunks   int64  `toml:"incoming_max_chunks"`
	IncomingOpenChunks  int64  `toml:"incoming_open_chunks"`
	QEMUBinary          string `toml:"qemu_binary"`
	QEMUResume          *bool  `toml:"qemu_resume"`
	QEMUUser            string `toml:"qemu_user"`
	QEMUSandbox         string `toml:"qemu_sandbox"`
	// MigrationRecords bounds the ended migrations `sgctl migrations`
	// keeps; 0: the default.
	MigrationRecords   int    `toml:"migration_records"`
	KeepGatheredChunks bool   `toml:"keep_gathered_chunks"`
	LogLevel           string `toml:"log_level"`
	LogFormat          string `toml:"log_format"`
}

const defaultConfigFile = `# sgnode configuration. Every key is optional; command-line flags override.

# QUIC listen addresses (multiaddrs).
listen = ["/ip4/0.0.0.0/udp/4100/quic-v1"]

# Cluster members: one multiaddr ending in /p2p/<peer-id> per line.
# sgnode dials them and admits only them (plus 'allow'). Relative paths are
# relative to the data directory.
peers_file = "peers.txt"

# Extra peer IDs to admit without dialing them.
allow = []

# Admit ANY peer. For labs only: anyone who can reach the port can push
# and fetch chunks.
allow_any = false

# Locality label shared with peers (rack, zone, site).
zone = ""

# Control socket (mode 0600). Default: <data>/sgnode.sock
api = ""

# Prometheus metrics on HOST:PORT (also served on the control socket).
metrics = ""

# Also serve Go's profiles (/debug/pprof/) on the metrics address. They
# show the process's internals to anyone who reaches it: off unless needed.
pprof = false

# Chunk store budgets. Chunks go to memory first, then spill to disk.
mem_budget = "1GiB"
disk_budget = "0"

# Cap on the bytes/s this node accepts by push from all peers, e.g.
# "2Gbit" or "200MB" (empty: no cap). Protects foreground traffic on a
# destination.
ingest_rate = ""

# This host's link rates, e.g. "10Gbit" (empty: not known). When the
# source knows its uplink and every target its downlink, a destination
# that can take more than its even share of the source's uplink, with
# relays that can take all the source sends, gathers from the relays
# during the scatter: its gather ends about when a direct migration's
# would, and the source is freed as soon.
uplink = ""
downlink = ""

# Cap on what any one peer's pushes may occupy in this node's chunk store:
# a size ("8GiB"), a share of the budgets ("50%") or "off"; empty: half
# the budgets. Pushes beyond it are answered "full" and the pusher places
# them elsewhere.
push_quota = ""

# How long the chunks of a migration are kept here when its destination
# neither releases nor renews them (a gather renews hourly while it runs).
hold_lease = "24h"

# Cap on the chunk IDs per second any one peer may ask about in have and
# get requests (0: no cap). Requests beyond it wait; a peer so far beyond it
# that a request would wait over 2 s is refused and, after 3 offences,
# banned. The default is twice what a 40 Gbit/s migration needs.
request_rate = 2500000

# Migrations opened to this node by one source: at most this many at once
# (each until it is retired), of this total size; and at most this many
# chunk positions in one migration (the gather keeps up to 512 bytes of state per
# position). An Open beyond them, or larger than the free disk of the data
# directory, is refused before anything is allocated for it.
incoming_per_peer = 16
incoming_size_per_peer = "1TiB"
incoming_max_chunks = 67108864
# The chunk positions of all migrations here until they are retired, every
# source together (512 bytes of memory each at most); 0: a quarter of
# this host's memory.
incoming_open_chunks = 0

# QEMU guests evicted to this node: start them here at once, on the lazy
# views of their memory and disks (false: gather only; start them yourself
# from the views). qemu_binary: the QEMU to run; empty runs this host's
# qemu-system-<arch> from PATH (the guest's architecture, from an
# allow-list; nothing the source sends names a program). qemu_user: the
# account QEMU drops to once it has opened the guest's files; empty:
# "sg-qemu" if this host has it, else "nobody"; "root" keeps root.
# qemu_sandbox: "require" refuses to start guests with a QEMU built
# without seccomp (no -sandbox); "optional" runs them unsandboxed, warned.
qemu_resume = true
qemu_binary = ""
qemu_user = ""
qemu_sandbox = "require"

# Ended migrations (both roles) that 'sgctl migrations' keeps, newest
# first; older records are dropped (also: sgctl migrations rm / prune).
migration_records = 256

# Once a VM is gathered here its files hold its chunks, and they leave the
# chunk store (the memory tier serves migrations, not finished VMs). true
# keeps them in the store too, so further gathers of the VM ('sgctl gather
# --from' this node) can fetch them here, at the cost of the store's room.
keep_gathered_chunks = false

# debug, info, warn or error; text or json.
log_level = "info"
log_format = "text"
`

// readFileConfig reads path; a missing file is fine when optional.
func readFileConfig(path string, optional bool) (fileConfig, error) {
	var fc fileConfig
	md, err := toml.DecodeFile(path, &fc)
	if err != nil {
		if optional && errors.Is(err, os.ErrNotExist) {
			return fileConfig{}, nil
		}
		return fc, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return fc, fmt.Errorf("config %s: unknown key %s", path, strings.Join(keys, ", "))
	}
	return fc, nil
}
