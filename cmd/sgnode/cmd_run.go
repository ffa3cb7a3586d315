package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sgrelay/sg/internal/daemon"
	"github.com/sgrelay/sg/internal/node"
	"github.com/sgrelay/sg/internal/units"
)

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	fl := flag.NewFlagSet("sgnode run", flag.ContinueOnError)
	data := fl.String("data", defaultDataDir(), "data directory (identity, chunks, socket)")
	cfgFile := fl.String("config", "", "config file (default <data>/sgnode.toml if present)")
	var listen, allow listFlag
	fl.Var(&listen, "listen", "QUIC listen multiaddr (repeatable)")
	fl.Var(&allow, "allow", "admit this peer ID too (repeatable)")
	peersFile := fl.String("peers", "", "cluster peers file")
	allowAny := fl.Bool("allow-any", false, "admit ANY peer (labs only)")
	apiPath := fl.String("api", "", "control socket path")
	metrics := fl.String("metrics", "", "serve Prometheus metrics on HOST:PORT")
	pprofOn := fl.Bool("pprof", false, "also serve Go's profiles (/debug/pprof/) on the metrics address")
	memBudget := fl.String("mem-budget", "", "memory tier budget, e.g. 4GiB")
	diskBudget := fl.String("disk-budget", "", "disk tier budget, e.g. 100GiB")
	zone := fl.String("zone", "", "locality label")
	ingestRate := fl.String("ingest-rate", "", "cap on bytes/s accepted by push, e.g. 400Mbit")
	uplink := fl.String("uplink", "", "this host's uplink rate, e.g. 10Gbit (lets a fast destination gather during the scatter)")
	downlink := fl.String("downlink", "", "this host's downlink rate, e.g. 10Gbit (told to sources evicting here)")
	pushQuota := fl.String("push-quota", "", `cap on one peer's pushes in the store: a size, a share ("50%", the default) or "off"`)
	holdLease := fl.String("hold-lease", "", "how long a migration's chunks are kept unless its destination releases or renews them (default 24h)")
	requestRate := fl.Int64("request-rate", node.DefaultRequestRate, "cap on chunk IDs/s one peer may ask about in have and get requests (0: none)")
	records := fl.Int("migration-records", 0, "ended migrations sgctl migrations keeps (0: the config's, else 256)")
	keepGathered := fl.Bool("keep-gathered-chunks", false, "keep a gathered VM's chunks in the store too (to serve further gathers of it from here)")
	logLevel := fl.String("log-level", "", "debug, info, warn or error")
	if err := fl.Parse(args); err != nil {
		return usageErr(err)
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fl.Arg(0))
	}

	path, optional := *cfgFile, false
	if path == "" {
		path, optional = filepath.Join(*data, "sgnode.toml"), true
	}
	fc, err := readFileConfig(path, optional)
	if err != nil {
		return err
	}
	// Flags override the file.
	set := map[string]bool{}
	fl.Visit(func(f *flag.Flag) { set[f.Name] = true })
	override := func(name string, dst *string, v string) {
		if set[name] {
			*dst = v
		}
	}
	override("peers", &fc.PeersFile, *peersFile)
	override("api", &fc.API, *apiPath)
	override("metrics", &fc.Metrics, *metrics)
	override("mem-budget", &fc.MemBudget, *memBudget)
	override("disk-budget", &fc.DiskBudget, *diskBudget)
	override("zone", &fc.Zone, *zone)
	override("ingest-rate", &fc.IngestRate, *ingestRate)
	override("uplink", &fc.Uplink, *uplink)
	override("downlink", &fc.Downlink, *downlink)
	override("push-quota", &fc.PushQuota, *pushQuota)
	override("hold-lease", &fc.HoldLease, *holdLease)
	if set["pprof"] {
		fc.Pprof = *pprofOn
	}
	override("log-level", &fc.LogLevel, *logLevel)
	if set["listen"] {
		fc.Listen = listen
	}
	if set["allow-any"] {
		fc.AllowAny = *allowAny
	}
	if set["migration-records"] {
		fc.MigrationRecords = *records
	}
	if set["keep-gathered-chunks"] {
		fc.KeepGatheredChunks = *keepGathered
	}
	if set["request-rate"] {
		fc.RequestRate = requestRate
	}
	fc.Allow = append(fc.Allow, allow...)

	cfg, err := buildConfig(*data, fc)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, fc.LogLevel, fc.LogFormat)
	if err != nil {
		return err
	}
	d, err := daemon.New(cfg, log)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

// buildConfig turns the merged file+flags settings into a daemon.Config,
// naming the setting in every error.
func buildConfig(data string, fc fileConfig) (daemon.Config, error) {
	cfg := daemon.DefaultConfig(data)
	cfg.Version = version
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
