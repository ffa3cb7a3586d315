package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/internal/cli"

	"github.com/sgrelay/sg/internal/daemon"
	"github.com/sgrelay/sg/internal/node"
	"github.com/sgrelay/sg/internal/units"
)

func newRunCmd(version string, stdout, stderr io.Writer) *cobra.Command {
	var (
		o                               runOptions
		memBudget, diskBudget           cli.Size
		ingestRate, uplink, downlink    cli.Rate
		records                         cli.Int
		requestRate                     int64
		pprofOn, allowAny, keepGathered bool
	)
	c := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon",
		Long: `Run the daemon on a data directory made by 'sgnode init' (or pass --init).
Settings come from <data>/sgnode.toml (or --config); flags override them.
Under systemd (Type=notify) it tells the service manager once it serves
its control socket.`,
		Example: `  sgnode run --data /var/lib/sg
  sgnode run --init --data /var/lib/sg --api /run/sg/sgnode.sock --mem-budget 8GiB`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fl := cmd.Flags()
			set := func(name string) bool { return fl.Changed(name) }
			fc, err := o.fileConfig()
			if err != nil {
				return err
			}
			// Flags override the file.
			override := func(name string, dst *string, v string) {
				if set(name) {
					*dst = v
				}
			}
			override("peers", &fc.PeersFile, o.peersFile)
			override("api", &fc.API, o.api)
			override("metrics", &fc.Metrics, o.metrics)
			override("mem-budget", &fc.MemBudget, fmt.Sprint(memBudget.V))
			override("disk-budget", &fc.DiskBudget, fmt.Sprint(diskBudget.V))
			override("zone", &fc.Zone, o.zone)
			override("ingest-rate", &fc.IngestRate, ingestRate.String())
			override("uplink", &fc.Uplink, uplink.String())
			override("downlink", &fc.Downlink, downlink.String())
			override("push-quota", &fc.PushQuota, o.pushQuota)
			override("hold-lease", &fc.HoldLease, o.holdLease)
			override("log-level", &fc.LogLevel, o.logLevel)
			if set("pprof") {
				fc.Pprof = pprofOn
			}
			if set("listen") {
				fc.Listen = o.listen
			}
			if set("allow-any") {
				fc.AllowAny = allowAny
			}
			if set("migration-records") {
				fc.MigrationRecords = records.V
			}
			if set("keep-gathered-chunks") {
				fc.KeepGatheredChunks = keepGathered
			}
			if set("request-rate") {
				if requestRate < 0 {
					return cli.Usagef("--request-rate %d: want chunk IDs per second, 0 for no cap, e.g. --request-rate 2500000", requestRate)
				}
				fc.RequestRate = &requestRate
			}
			fc.Allow = append(fc.Allow, o.allow...)
			return runDaemon(cmd.Context(), o, fc, version, stdout, stderr)
		},
	}
	fl := c.Flags()
	fl.StringVar(&o.data, "data", defaultDataDir(), "data `dir`ectory (identity, chunks, default socket)")
	fl.BoolVar(&o.init, "init", false, "create the identity and config file first if the data directory has none (as sgnode init)")
	fl.StringVar(&o.config, "config", "", "config `file` (default <data>/sgnode.toml if present)")
	fl.StringArrayVar(&o.listen, "listen", nil, "QUIC listen `multiaddr` (repeatable)")
	fl.StringArrayVar(&o.allow, "allow", nil, "admit this `peer` ID too (repeatable)")
	fl.StringVar(&o.peersFile, "peers", "", "cluster peers `file`")
	fl.BoolVar(&allowAny, "allow-any", false, "admit ANY peer (labs only)")
	fl.StringVar(&o.api, "api", "", "control `socket` path (default <data>/sgnode.sock)")
	fl.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics on `host:port`")
	fl.BoolVar(&pprofOn, "pprof", false, "also serve Go's profiles (/debug/pprof/) on the metrics address")
	cli.SizeVar(fl, &memBudget, "mem-budget", 0, 0, 0, "memory tier budget, e.g. 4GiB (default: the config's, else 1GiB)")
	cli.SizeVar(fl, &diskBudget, "disk-budget", 0, 0, 0, "disk tier budget, e.g. 100GiB (default: the config's, else 0)")
	fl.StringVar(&o.zone, "zone", "", "locality `label`")
	cli.RateVar(fl, &ingestRate, "ingest-rate", "cap on what peers may push here, e.g. 400Mbit or 50MB/s")
	cli.RateVar(fl, &uplink, "uplink", "this host's uplink rate, e.g. 10Gbit (lets a fast destination gather during the scatter)")
	cli.RateVar(fl, &downlink, "downlink", "this host's downlink rate, e.g. 10Gbit (told to sources evicting here)")
	fl.StringVar(&o.pushQuota, "push-quota", "", "cap on one peer's pushes in the store: a size, a share (\"50%\", the default) or \"off\"")
	fl.StringVar(&o.holdLease, "hold-lease", "", "the `duration` a migration's chunks are kept unless its destination releases or renews them (default 24h)")
	fl.Int64Var(&requestRate, "request-rate", node.DefaultRequestRate, "cap on chunk IDs/s one peer may ask about in have and get requests (0: none)")
	cli.IntVar(fl, &records, "migration-records", 0, 0, 1<<20, "--migration-records 256", "ended migrations sgctl migrations keeps (0: the config's, else 256)")
	fl.BoolVar(&keepGathered, "keep-gathered-chunks", false, "keep a gathered VM's chunks in the store too (to serve further gathers of it from here)")
	fl.StringVar(&o.logLevel, "log-level", "", "`level`: debug, info, warn or error")
	return c
}

// runOptions are run's flags that are not settings of the config file.
type runOptions struct {
	data, config, peersFile, api, metrics, zone string
	pushQuota, holdLease, logLevel              string
	listen, allow                               []string
	init                                        bool
}

// fileConfig reads the config file run uses.
func (o runOptions) fileConfig() (fileConfig, error) {
	path, optional := o.config, false
	if path == "" {
		path, optional = filepath.Join(o.data, "sgnode.toml"), true
	}
	fc, err := readFileConfig(path, optional)
	if err != nil {
		return fc, &cli.UsageError{Err: err}
	}
	return fc, nil
}

// runDaemon runs sgnode on o.data, which must hold an identity: a
// mistyped --data would otherwise start a new node with a new peer ID,
// unknown to its cluster.
func runDaemon(ctx context.Context, o runOptions, fc fileConfig, version string, stdout, stderr io.Writer) error {
	if _, err := os.Stat(filepath.Join(o.data, "identity.key")); errors.Is(err, fs.ErrNotExist) && o.init {
		if err := initData(stdout, o.data, defaultPort); err != nil {
			return err
		}
		if fc, err = o.fileConfig(); err != nil {
			return err
		}
	}
	if _, err := loadIdentity(o.data); err != nil {
		return err
	}
	cfg, err := buildConfig(o.data, fc)
	if err != nil {
		return &cli.UsageError{Err: err}
	}
	cfg.Version = version
	log, err := newLogger(stderr, fc.LogLevel, fc.LogFormat)
	if err != nil {
		return &cli.UsageError{Err: err}
	}
	d, err := daemon.New(cfg, log)
	if err != nil {
		return err
	}
	// The control socket is listening and the node is up: requests from
	// here on are served once Run starts, so the unit's dependents may go.
	if err := notifyReady(); err != nil {
		log.Warn("readiness not told to the service manager", "err", err)
	}
	return d.Run(ctx)
}

// loadIdentity reads the identity of the data directory data; a missing
// one is a usage error that says how to make it.
func loadIdentity(data string) (crypto.PrivKey, error) {
	path := daemon.DefaultConfig(data).IdentityPath()
	key, err := node.LoadIdentity(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, cli.Usagef("no identity in %s (%s is missing): run 'sgnode init --data %s' first, or pass --init to sgnode run", data, filepath.Base(path), data)
	}
	return key, err
}

// buildConfig turns the merged file+flags settings into a daemon.Config,
// naming the setting in every error.
func buildConfig(data string, fc fileConfig) (daemon.Config, error) {
	cfg := daemon.DefaultConfig(data)
	cfg.APISocket = fc.API
	cfg.MetricsAddr = fc.Metrics
	cfg.Pprof = fc.Pprof
	if len(fc.Listen) > 0 {
		cfg.Node.Listen = fc.Listen
	}
	cfg.Node.AllowAny = fc.AllowAny
	cfg.Node.Zone = fc.Zone
	cfg.QEMU.Binary, cfg.QEMU.User, cfg.QEMU.Sandbox = fc.QEMUBinary, fc.QEMUUser, fc.QEMUSandbox
	cfg.MigrationRecords = fc.MigrationRecords
	cfg.KeepGatheredChunks = fc.KeepGatheredChunks
	if fc.QEMUResume != nil {
		cfg.QEMU.Resume = *fc.QEMUResume
	}
	for _, a := range fc.Allow {
		id, err := peer.Decode(a)
		if err != nil {
			return cfg, fmt.Errorf("allow: %q is not a peer ID: %w", a, err)
		}
		cfg.Node.Allow = append(cfg.Node.Allow, id)
	}
	if fc.PeersFile != "" {
		p := fc.PeersFile
		if !filepath.IsAbs(p) {
			p = filepath.Join(data, p)
		}
		peers, err := node.ReadPeersFile(p)
		if err != nil {
			if fc.PeersFile == "peers.txt" && errors.Is(err, fs.ErrNotExist) {
				peers = nil // the default file is optional
			} else {
				return cfg, fmt.Errorf("peers_file: %w", err)
			}
		}
		cfg.Node.Peers = peers
	}
	var err error
	if fc.MemBudget != "" {
		if cfg.Store.MemoryBudget, err = units.ParseSize(fc.MemBudget); err != nil {
			return cfg, fmt.Errorf("mem_budget: %w", err)
		}
	}
	for _, r := range []struct {
		key, value string
		dst        *int64
	}{
		{"ingest_rate", fc.IngestRate, &cfg.Node.IngestRate},
		{"uplink", fc.Uplink, &cfg.Node.Uplink},
		{"downlink", fc.Downlink, &cfg.Node.Downlink},
	} {
		if r.value == "" {
			continue
		}
		if *r.dst, err = units.ParseRate(r.value); err != nil {
			return cfg, fmt.Errorf("%s: %w", r.key, err)
		}
	}
	if fc.DiskBudget != "" {
		if cfg.Store.DiskBudget, err = units.ParseSize(fc.DiskBudget); err != nil {
			return cfg, fmt.Errorf("disk_budget: %w", err)
		}
	}
	if r := fc.RequestRate; r != nil {
		if *r < 0 {
			return cfg, fmt.Errorf("request_rate: %d: want chunk IDs per second, 0 for no cap", *r)
		}
		cfg.Node.RequestRate = *r
	}
	if fc.IncomingPerPeer < 0 || fc.IncomingMaxChunks < 0 || fc.IncomingOpenChunks < 0 {
		return cfg, fmt.Errorf("incoming_per_peer %d, incoming_max_chunks %d, incoming_open_chunks %d: want positive numbers",
			fc.IncomingPerPeer, fc.IncomingMaxChunks, fc.IncomingOpenChunks)
	}
	cfg.Node.MaxIncomingPerPeer, cfg.Node.MaxIncomingPositions = fc.IncomingPerPeer, fc.IncomingMaxChunks
	cfg.Node.MaxOpenPositions = fc.IncomingOpenChunks
	if s := fc.IncomingSizePerPeer; s != "" {
		if cfg.Node.MaxIncomingBytesPerPeer, err = units.ParseSize(s); err != nil {
			return cfg, fmt.Errorf("incoming_size_per_peer: %w", err)
		}
	}
	if l := fc.HoldLease; l != "" {
		d, perr := time.ParseDuration(l)
		if perr != nil || d <= 0 {
			return cfg, fmt.Errorf("hold_lease: %q: want a positive duration, e.g. 24h", l)
		}
		cfg.Node.HoldLease = d
	}
	if q := fc.PushQuota; q == "off" {
		cfg.Node.PushQuota = -1
	} else if q != "" {
		if pct, ok := strings.CutSuffix(q, "%"); ok {
			f, perr := strconv.ParseFloat(pct, 64)
			if perr != nil || f <= 0 || f > 100 {
				return cfg, fmt.Errorf("push_quota: %q: want a size or a share in (0, 100]%%", q)
			}
			cfg.Node.PushQuota = int64(f / 100 * float64(cfg.Store.MemoryBudget+cfg.Store.DiskBudget))
		} else if cfg.Node.PushQuota, err = units.ParseSize(q); err != nil {
			return cfg, fmt.Errorf("push_quota: %w", err)
		}
	}
	return cfg, nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if level == "" {
		level = "info"
	}
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log_level: %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log_format: %q: want text or json", format)
}
