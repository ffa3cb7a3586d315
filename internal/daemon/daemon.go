package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/sgrelay/sg/internal/chunkstore"
	"github.com/sgrelay/sg/internal/cluster"
	"github.com/sgrelay/sg/internal/fetch/fuseview"
	"github.com/sgrelay/sg/internal/node"
	"github.com/sgrelay/sg/internal/vm"
	"github.com/sgrelay/sg/internal/wire"
)

// Daemon is a running sgnode.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	reg     *prometheus.Registry
	api     net.Listener
	store   *chunkstore.Store
	node    *node.Node
	started time.Time
	vms     *vm.Registry
	roles   *cluster.Roles
	net     cluster.Net // the node as eviction and fetch see it
	out     *outgoing
	views   *views
	lazy    lazyMounts
	// resuming is the start-up goroutine that resumes interrupted
	// gathers; waited for before the roles it starts gathers in.
	resuming sync.WaitGroup
	guests   guests
	// names are the short local names of migrations' sockets and run
	// directories.
	names localNames

	// runCtx ends when the daemon stops; gathers (started by peers, maybe
	// before Run) live under it.
	runCtx    context.Context
	cancelRun context.CancelFunc

	ops        *prometheus.CounterVec
	evictET    prometheus.Histogram
	evictBytes prometheus.Counter
	gatherTMT  prometheus.Histogram
}

// New opens the control socket, the chunk store and the node, in that
// order, undoing what it opened if a later step fails.
func New(cfg Config, log *slog.Logger) (_ *Daemon, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	d := &Daemon{cfg: cfg, log: log, reg: prometheus.NewRegistry(), started: time.Now()}
	d.runCtx, d.cancelRun = context.WithCancel(context.Background())
	d.lazy.m = map[string]*fuseview.Mount{}
	d.guests.m = map[wire.MigrationID]*guestState{}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	if d.api, err = listenSocket(cfg.SocketPath()); err != nil {
		return nil, err
	}
	undo = append(undo, func() { d.api.Close() })

	if d.store, err = chunkstore.Open(cfg.storeConfig()); err != nil {
		return nil, fmt.Errorf("open chunk store: %w", err)
	}
	undo = append(undo, func() { d.store.Close() })

	if d.vms, err = vm.OpenRegistry(filepath.Join(cfg.DataDir, "vms.json")); err != nil {
		return nil, err
	}
	d.unmountStale()
	d.out = newOutgoing(cfg.MigrationRecords)
	d.views = &views{d: d, ctx: d.runCtx, nbd: map[wire.MigrationID]map[string]string{}, exports: map[wire.MigrationID]*exports{}}

	key, created, err := node.LoadOrCreateIdentity(cfg.IdentityPath())
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("created a new identity", "path", cfg.IdentityPath())
	}
	if d.names, err = newLocalNames(key); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	ncfg := cfg.Node
	ncfg.Identity = key
	if d.node, err = node.New(ncfg, d.store, node.WithLogger(log), node.WithRegistry(d.reg)); err != nil {
		return nil, err
	}
	d.net = cluster.NewNet(d.node)
	d.roles = cluster.Serve(d.runCtx, d.node, d.store, cluster.Config{Dir: filepath.Join(cfg.DataDir, "vms"), Log: log,
		OnGather: d.onGather, OnGatherDone: d.onGatherDone, OnAbandon: d.afterGather,
		KeepGathered: cfg.KeepGatheredChunks})
	d.registerMetrics()
	return d, nil
}

// listenSocket opens the control socket with mode 0600. A socket file left
// by a dead sgnode is replaced; one that answers means sgnode is running.
func listenSocket(path string) (net.Listener, error) {
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another sgnode is already running", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control socket %s: remove stale socket: %w", path, err)
		}
	}
	old := umask(0o177)
	ln, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

func (d *Daemon) registerMetrics() {
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Constant 1, labelled with what runs: dashboards join it to see
	// which version each node had when.
	d.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sg_build_info", Help: "The running sgnode's version (value 1).",
		ConstLabels: prometheus.Labels{"version": d.cfg.Version, "goversion": runtime.Version()}}, func() float64 { return 1 }))
	for _, tier := range []string{"memory", "disk"} {
		stat := func() chunkstore.TierStats {
			for _, t := range d.store.TierStats() {
				if t.Name == tier {
					return t
				}
			}
			return chunkstore.TierStats{}
		}
		labels := prometheus.Labels{"tier": tier}
		d.reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sg_chunkstore_chunks", Help: "Chunks held.", ConstLabels: labels},
				func() float64 { return float64(stat().Chunks) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sg_chunkstore_used_bytes", Help: "Bytes counted against the budget.", ConstLabels: labels},
				func() float64 { return float64(stat().Used) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sg_chunkstore_budget_bytes", Help: "Budget.", ConstLabels: labels},
				func() float64 { return float64(stat().Budget) }),
		)
	}
	d.ops = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sg_api_operations_total", Help: "Control API operations, by kind and result.",
	}, []string{"op", "result"})
	d.evictET = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "sg_eviction_time_seconds", Help: "Eviction time of finished evictions.",
		Buckets: prometheus.ExponentialBuckets(0.1, 2, 14),
	})
	d.evictBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sg_eviction_vm_bytes_total", Help: "VM bytes evicted from this node.",
	})
	d.gatherTMT = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "sg_gather_total_migration_time_seconds", Help: "Total migration time of gathers completed here.",
		Buckets: prometheus.ExponentialBuckets(0.1, 2, 14),
	})
	d.reg.MustRegister(d.ops, d.evictET, d.evictBytes, d.gatherTMT)
	d.registerLifetimeMetrics()
}

// Node is the daemon's libp2p node.
func (d *Daemon) Node() *node.Node { return d.node }

// Run serves until ctx ends, then stops everything. It returns nil on a
// clean shutdown.
func (d *Daemon) Run(ctx context.Context) error {
	d.log.Info("sgnode running", "peer", d.node.ID(), "addrs", d.node.Addrs(), "api", d.cfg.SocketPath())
	g, gctx := errgroup.WithContext(ctx)
	apiSrv := &http.Server{Handler: d.handler(), BaseContext: func(net.Listener) context.Context { return gctx }}
	g.Go(func() error {
		if err := apiSrv.Serve(d.api); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("control API: %w", err)
		}
		return nil
	})
	var metricsSrv *http.Server
	if d.cfg.MetricsAddr != "" {
		ln, err := net.Listen("tcp", d.cfg.MetricsAddr)
		if err != nil {
			d.shutdown(apiSrv, nil)
			return fmt.Errorf("metrics listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{}))
		if d.cfg.Pprof {
			// Where the CPU goes during an eviction is the first question
			// to ask of a slow one; asked for by its own setting.
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		g.Go(func() error {
			if err := metricsSrv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error { return d.node.Run(gctx) })
	d.resuming.Add(1)
	go func() {
		defer d.resuming.Done()
		d.resumeGathers()
	}()
	g.Go(func() error {
		<-gctx.Done()
		d.cancelRun()
		d.shutdown(apiSrv, metricsSrv)
		return nil
	})
	err := g.Wait()
	if cerr := d.close(); err == nil {
		err = cerr
	}
	d.log.Info("sgnode stopped")
	return err
}

func (d *Daemon) shutdown(servers ...*http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range servers {
		if s != nil {
			_ = s.Shutdown(ctx)
		}
	}
}

// close stops the node before the store, so no handler writes to a closed
// store, and removes the socket.
func (d *Daemon) close() error {
	d.cancelRun()
	d.resuming.Wait()
	d.unmountAll()
	d.roles.Wait()
	d.views.wait()
	err := d.node.Close()
	err = errors.Join(err, d.store.Close())
	_ = os.Remove(d.cfg.SocketPath())
	return err
}
