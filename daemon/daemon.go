// Package daemon is the per-node isoobs daemon: it reads the eBPF DNS probe every interval,
// attributes counters to pods (cgroup id → cgroup path → pod UID → Kubernetes pod), keeps
// sliding-window history and top query names in bounded memory, and serves the isoobs.v1
// gRPC API, Prometheus metrics and health endpoints.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"k8s.io/client-go/rest"

	"github.com/isoobs/isoobs/bpf"
	"github.com/isoobs/isoobs/buildinfo"
	"github.com/isoobs/isoobs/cgroupv2"
	"github.com/isoobs/isoobs/daemon/podmeta"
	"github.com/isoobs/isoobs/daemon/podresolver"
	"github.com/isoobs/isoobs/hubble"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// Version is this build's version from buildinfo (stamped by `make build` and release builds,
// else "(devel)"); Status reports it so the plugin can warn about version skew.
var Version = buildinfo.Get().Version

// DefaultSocket is where the daemon serves gRPC on a node.
const DefaultSocket = "unix:///run/isoobs/isoobs.sock"

// Config configures a Daemon. Zero values mean the documented defaults.
type Config struct {
	// NodeName labels every row; with RESTConfig it selects the pods to watch. Default: hostname.
	NodeName string
	// CgroupRoot is the cgroup v2 directory the probe attaches to. Default: the cgroup v2
	// mount (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts).
	CgroupRoot string
	// Interval between two reads of the probe (one frame per interval). Default 1s.
	Interval time.Duration
	// Retention is how much history is kept (the longest rate window and look-back: every
	// tick for the last minute, one sample per 10 s before) and how long a vanished pod stays
	// visible. Default 15m.
	Retention time.Duration
	// RESTConfig reaches the Kubernetes API for pod names, labels and workloads. nil: rows
	// carry pod UIDs and cgroup paths only.
	RESTConfig *rest.Config
	// GRPCListen are addresses to serve the API on: "unix:///path" or "host:port" (or
	// "tcp://host:port"). Empty: no listener (use GRPCServer in-process).
	GRPCListen []string
	// MetricsListen serves /metrics, /healthz and /readyz ("host:port"). Empty: off.
	MetricsListen string
	// AllowUnauthenticatedNetwork lets GRPCListen hold a TCP address that is not loopback. The
	// API has no authentication of its own (the pod's loopback is reached through
	// pods/portforward, i.e. the caller's RBAC; the unix socket is root-only): on any other
	// address everyone who can reach it reads every pod's DNS names.
	AllowUnauthenticatedNetwork bool
	// TenantAuthorization makes TCP callers (kubectl port-forward) present a bearer token the API
	// server vouches for with audience TenantAudience (TokenReview), and answers Top for one
	// namespace at a time that a SubjectAccessReview allows (get dnsflows.isoobs.io). Callers on
	// a unix socket (root on the node) are not asked. Needs RESTConfig, and rights to create
	// TokenReviews and SubjectAccessReviews (system:auth-delegator). See docs/security.md.
	TenantAuthorization bool

	// MaxTrackedPods bounds the pods (and unresolved cgroups) with history. Default 1024.
	MaxTrackedPods int
	// NamesPerPod and NamesPerNode are the Space-Saving capacities. Defaults 64 and 1024.
	NamesPerPod  int
	NamesPerNode int
	// Kernel map sizes (bpf.Options); 0 means the probe's defaults.
	KernelMaxPods, KernelMaxNames, KernelMaxInflight, KernelPodSlots uint32
	// LatencySampleAbove is the query rate (per second) above which a pod's
	// latency is sampled (bpf.Options.LatencySampleAbove; 0: its default);
	// TimeEveryQuery turns sampling off.
	LatencySampleAbove uint32
	TimeEveryQuery     bool
	// DNSTimeout: a query without its answer this long is a timeout of its
	// pod (bpf.Options.DNSTimeout; 0: its default, 5 s).
	DNSTimeout time.Duration

	Logger *slog.Logger

	// Hubble is the observer API whose flows are merged into the rows: Server defaults to the
	// node-local socket (hubble.DefaultServer). A missing socket is not an error: the daemon
	// serves the probe's rows and Status says why Hubble is not connected.
	Hubble hubble.ClientConfig
	// HubbleDisabled runs without Hubble.
	HubbleDisabled bool
	// TCPDisabled runs without the TCP probe (no top tcp on this node).
	TCPDisabled bool

	// source replaces the real probe in tests.
	source Source
	// tcpSource replaces the real TCP probe in tests.
	tcpSource TCPSource
}

func (c *Config) statsEvery() int { return max(1, int(5*time.Second/c.Interval)) }
func (c *Config) gcEvery() int    { return max(1, int(10*time.Second/c.Interval)) }

func (c *Config) setDefaults() error {
	if c.Interval == 0 {
		c.Interval = time.Second
	}
	if c.Interval < 10*time.Millisecond {
		return fmt.Errorf("interval %v is too short; use --interval 1s (10ms at least)", c.Interval)
	}
	if c.Retention == 0 {
		c.Retention = 15 * time.Minute
	}
	if c.Retention < c.Interval*2 {
		c.Retention = c.Interval * 2
	}
	if c.MaxTrackedPods <= 0 {
		c.MaxTrackedPods = 1024
	}
	if c.NamesPerPod <= 0 {
		c.NamesPerPod = 64
	}
	if c.NamesPerNode <= 0 {
		c.NamesPerNode = 1024
	}
	if c.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("node name not set and hostname unknown (%v); pass --node-name", err)
		}
		c.NodeName = h
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if !c.AllowUnauthenticatedNetwork {
		for _, addr := range c.GRPCListen {
			if err := checkLoopback(addr); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkLoopback accepts unix:// sockets and TCP addresses whose host is a loopback IP or
// "localhost"; anything else (":9967", "0.0.0.0:9967", a node IP or a host name) would serve
// the unauthenticated API beyond the pod.
func checkLoopback(addr string) error {
	if strings.HasPrefix(addr, "unix://") {
		return nil
	}
	host, _, err := net.SplitHostPort(strings.TrimPrefix(addr, "tcp://"))
	if err != nil {
		return fmt.Errorf("--grpc-listen %s: %w (use unix:///path or 127.0.0.1:PORT)", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--grpc-listen %s is not a loopback address: the gRPC API has no authentication, so anyone who can reach %s would read every pod's DNS names; "+
		"listen on 127.0.0.1 (reached through kubectl port-forward, i.e. the caller's RBAC) or a unix socket, or pass --allow-unauthenticated-grpc to serve it unauthenticated anyway", addr, addr)
}

// Daemon is a running node daemon.
type Daemon struct {
	cfg      Config
	src      Source
	resolver *podresolver.Resolver
	watcher  *podmeta.Watcher
	metrics  *metrics
	coll     *collector
	server   *server
	auth     *tenantAuth // nil: no tenant authorization
	kernel   string
	// tcp is nil when the TCP probe is off or did not load (tcpErr says why).
	tcp    *tcpCollector
	tcpErr error
	// tracer is nil when the DNS source cannot trace (tests' fake sources).
	tracer *tracer

	closeOnce sync.Once
}

// New loads and attaches the probe and prepares everything Run serves. Errors say what is
// missing (capability, BTF, cgroup root) and which flag or command fixes it.
func New(cfg Config) (*Daemon, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if cfg.CgroupRoot == "" {
		root, err := cgroupv2.Detect()
		if err != nil {
			return nil, err
		}
		cfg.CgroupRoot = root
	}
	src := cfg.source
	var chainedDNS *bpf.DNSProbe // attached by startTCP
	if src == nil {
		// With the TCP probe on, its programs run the DNS ones: the kernel dispatches one
		// program a packet instead of two.
		chained := !cfg.TCPDisabled && cfg.tcpSource == nil
		probe, err := bpf.LoadDNS(bpf.Options{CgroupRoot: cfg.CgroupRoot, MaxPods: cfg.KernelMaxPods, MaxNames: cfg.KernelMaxNames, MaxInflight: cfg.KernelMaxInflight, PodSlots: cfg.KernelPodSlots,
			LatencySampleAbove: cfg.LatencySampleAbove, TimeEveryQuery: cfg.TimeEveryQuery, DNSTimeout: cfg.DNSTimeout, Chained: chained})
		if err != nil {
			return nil, fmt.Errorf("load DNS probe: %w", err)
		}
		src = probe
		if chained {
			chainedDNS = probe
		}
	}
	d := &Daemon{cfg: cfg, src: src, kernel: kernelRelease()}
	if ts, ok := src.(traceSource); ok {
		d.tracer = newTracer(ts)
	}
	d.resolver = podresolver.NewResolver(cfg.CgroupRoot, cfg.Interval/2)
	if cfg.RESTConfig != nil {
		w, err := podmeta.NewWatcher(cfg.RESTConfig, cfg.NodeName, cfg.Logger)
		if err != nil {
			src.Close()
			return nil, err
		}
		d.watcher = w
	}
	d.metrics = newMetrics()
	var lookup podLookup
	if d.watcher != nil {
		lookup = d.watcher
	}
	d.coll = newCollector(&d.cfg, src, d.resolver, lookup, d.metrics, time.Now())
	if !cfg.HubbleDisabled {
		feed, err := newHubbleFeed(&d.cfg)
		if err != nil {
			src.Close()
			return nil, err
		}
		d.coll.hub = feed
	}
	d.metrics.c = d.coll
	if err := d.startTCP(lookup, chainedDNS); err != nil {
		src.Close()
		return nil, err
	}
	if d.tcp != nil {
		bpf.DropReasonName(0) // the kernel's drop reason names are read from its BTF once, now: see releaseLoadGarbage
		if cfg.tcpSource == nil {
			warmKernelNaming() // the drop location namer's one-off load, before serving
		}
	}
	releaseLoadGarbage()
	d.metrics.reg.MustRegister(d.hubbleMetrics()...)
	d.server = &server{d: d}
	if cfg.TenantAuthorization {
		if cfg.RESTConfig == nil {
			src.Close()
			return nil, errors.New("--tenant-authorization needs the Kubernetes API (TokenReview, SubjectAccessReview): drop --no-kubernetes or pass --kubeconfig")
		}
		a, err := newTenantAuth(cfg.RESTConfig)
		if err != nil {
			src.Close()
			return nil, err
		}
		d.auth = a
	}
	return d, nil
}

// hubbleMetrics say whether the Hubble side of the merge works (verify reads
// isoobs_hubble_connected); the flows themselves are Hubble's own metrics.
func (d *Daemon) hubbleMetrics() []prometheus.Collector {
	status := func() hubble.Status {
		if d.coll.hub == nil {
			return hubble.Status{}
		}
		return d.coll.hub.client.Status()
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "isoobs_hubble_connected",
			Help: "1 while the daemon follows Hubble's observer API, 0 when down or disabled (--hubble-server=off)."},
			func() float64 {
				if status().Connected {
					return 1
				}
				return 0
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "isoobs_hubble_flows_received_total",
			Help: "Flows received from Hubble."},
			func() float64 { return float64(status().FlowsReceived) }),
	}
}

// GRPCServer is the API implementation, usable in-process (e.g. over bufconn) while Run runs.
func (d *Daemon) GRPCServer() isoobsv1.DaemonServer { return d.server }

// Config is the effective configuration (defaults filled in).
func (d *Daemon) Config() Config { return d.cfg }

// CountingSince is when this daemon started counting (counters restart with the daemon).
func (d *Daemon) CountingSince() time.Time { return d.coll.started }

// Run collects every interval and serves the configured listeners until ctx ends.
func (d *Daemon) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if d.watcher != nil {
		d.watcher.Start(ctx)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	if h := d.coll.hub; h != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.client.Run(ctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.runTCP(ctx)
	}()

	opts := []grpc.ServerOption{
		// Requests are a few hundred bytes; frames go the other way.
		grpc.MaxRecvMsgSize(64 << 10),
		grpc.MaxConcurrentStreams(maxTopStreams + 8),
		// Pings find clients that vanished without closing (a killed laptop, a dropped
		// port-forward) so their streams end; clients may ping every 10 s, with or without streams.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	if d.auth != nil {
		opts = append(opts, grpc.UnaryInterceptor(d.auth.unary))
	}
	gs := grpc.NewServer(opts...)
	isoobsv1.RegisterDaemonServer(gs, d.server)
	var hs *http.Server
	// stop ends everything started so far and waits for it: the Hubble client and the pod
	// watcher (ctx), every gRPC listener and the metrics server.
	stop := func() {
		cancel()
		gs.Stop()
		if hs != nil {
			sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = hs.Shutdown(sctx)
			scancel()
		}
		wg.Wait()
	}
	for _, addr := range d.cfg.GRPCListen {
		l, err := listen(addr)
		if err != nil {
			stop()
			return err
		}
		d.cfg.Logger.Info("serving gRPC", "addr", addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := gs.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				errc <- fmt.Errorf("grpc on %s: %w", addr, err)
			}
		}()
	}
	if d.cfg.MetricsListen != "" {
		l, err := net.Listen("tcp", d.cfg.MetricsListen)
		if err != nil {
			stop()
			return fmt.Errorf("metrics listen %s: %w; pick another --metrics-listen", d.cfg.MetricsListen, err)
		}
		hs = &http.Server{Handler: d.HTTPHandler(), ReadHeaderTimeout: 5 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics on %s: %w", d.cfg.MetricsListen, err)
			}
		}()
	}

	d.coll.tick(time.Now())
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-errc:
			runErr = err
			break loop
		case now := <-t.C:
			d.coll.tick(now)
		}
	}
	stop()
	return runErr
}

// HTTPHandler serves /metrics, /healthz and /readyz.
func (d *Daemon) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := d.Healthy(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := d.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Healthy is nil when every probe is attached and the collector ticked recently.
func (d *Daemon) Healthy() error {
	for _, a := range d.src.Attachments() {
		if a.Err != nil {
			return fmt.Errorf("probe %s (%s) not attached: %v", a.Program, a.Hook, a.Err)
		}
	}
	d.coll.mu.RLock()
	last := d.coll.lastTick
	d.coll.mu.RUnlock()
	if last.IsZero() {
		return errors.New("collector has not ticked yet")
	}
	if age := time.Since(last); age > 3*d.cfg.Interval+time.Second {
		return fmt.Errorf("collector last ticked %v ago (interval %v)", age.Round(time.Millisecond), d.cfg.Interval)
	}
	return nil
}

// Ready is Healthy plus, when Kubernetes is configured, a synced pod list.
func (d *Daemon) Ready() error {
	if err := d.Healthy(); err != nil {
		return err
	}
	if d.watcher != nil {
		if ok, msg := d.watcher.Connected(); !ok {
			return fmt.Errorf("kubernetes: %s", msg)
		}
	}
	return nil
}

// Close detaches the probe.
func (d *Daemon) Close() error {
	var err error
	d.closeOnce.Do(func() {
		if d.tracer != nil {
			d.tracer.close()
		}
		err = errors.Join(d.src.Close(), d.closeTCP())
	})
	return err
}

func listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("grpc socket directory: %w", err)
		}
		// A socket left by a previous run would make Listen fail with "address in use".
		if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(path)
		}
		// 0600 whatever the umask: the API is unauthenticated, so only root may connect. The umask
		// covers the moment between bind() and chmod(); the chmod covers a umask that is ignored.
		old := unix.Umask(0o177)
		l, err := net.Listen("unix", path)
		unix.Umask(old)
		if err != nil {
			return nil, fmt.Errorf("grpc listen %s: %w; pass another --grpc-listen", addr, err)
		}
		if err := os.Chmod(path, 0o600); err != nil {
			l.Close()
			return nil, fmt.Errorf("grpc socket %s: %w", path, err)
		}
		return l, nil
	}
	addr = strings.TrimPrefix(addr, "tcp://")
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("grpc listen %s: %w; pass another --grpc-listen", addr, err)
	}
	return l, nil
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Machine[:])
}

// releaseLoadGarbage returns the memory loading the probes used to the OS now. Loading parses
// the kernel's BTF (/sys/kernel/btf/vmlinux, ~30 MiB of Go heap here) for CO-RE and the drop
// reason names; all of it is garbage once the programs are in the kernel, but without a
// GOMEMLIMIT the runtime keeps the grown heap for minutes, and an idle daemon's RSS would be
// 78 MiB instead of 48.
func releaseLoadGarbage() {
	debug.FreeOSMemory()
}
