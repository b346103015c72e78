// isoobs-daemon is the per-node isoobs daemon: eBPF DNS probe, per-pod top view over gRPC,
// Prometheus metrics. Run it as root, or with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN
// (CAP_SYS_ADMIN instead on kernels before 5.8), on every node, usually from the isoobs
// DaemonSet.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/isoobs/isoobs/bpf"
	"github.com/isoobs/isoobs/daemon"
	"github.com/isoobs/isoobs/hubble"
	"github.com/isoobs/isoobs/hubble/flags"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "isoobs-daemon:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var (
		cfg          daemon.Config
		kubeconfig   string
		noKubernetes bool
		logLevel     string
		maxProcs     int
		hubbleFlags  = flags.Hubble{Server: hubble.DefaultServer}
	)
	cmd := &cobra.Command{
		Use:           "isoobs-daemon",
		Short:         "Per-node eBPF DNS observer serving the isoobs gRPC API and Prometheus metrics",
		Version:       daemon.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: use debug, info, warn or error", logLevel)
			}
			if maxProcs < 0 {
				return fmt.Errorf("--gomaxprocs %d: use a positive number, or 0 for Go's default", maxProcs)
			}
			if maxProcs > 0 {
				runtime.GOMAXPROCS(maxProcs)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			cfg.Logger = log
			if !noKubernetes {
				rc, err := restConfig(kubeconfig)
				if err != nil {
					return err
				}
				if rc == nil {
					log.Warn("not in a cluster and no --kubeconfig: rows will show pod UIDs and cgroup paths only")
				}
				cfg.RESTConfig = rc
			}
			cfg.TimeEveryQuery = cfg.LatencySampleAbove == 0
			cfg.Hubble, cfg.HubbleDisabled = hubbleFlags.ClientConfig()
			d, err := daemon.New(cfg)
			if err != nil {
				return err
			}
			defer d.Close()
			eff := d.Config()
			log.Info("isoobs daemon started", "version", daemon.Version, "node", eff.NodeName, "cgroup_root", eff.CgroupRoot,
				"interval", eff.Interval, "gomaxprocs", runtime.GOMAXPROCS(0), "hubble", hubbleDesc(eff), "grpc", eff.GRPCListen, "metrics", eff.MetricsListen, "kubernetes", eff.RESTConfig != nil)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return d.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name as Kubernetes knows it (default $NODE_NAME, else the hostname)")
	f.StringVar(&cfg.CgroupRoot, "cgroup-root", "", "cgroup v2 directory to observe (default: the cgroup v2 mount, /sys/fs/cgroup or /sys/fs/cgroup/unified)")
	f.DurationVar(&cfg.Interval, "interval", time.Second, "how often the probe maps are read (one Top frame per interval)")
	f.DurationVar(&cfg.Retention, "retention", 15*time.Minute, "history kept per pod (the longest rate window and top dns --since look-back; every interval for the last minute, every 10s before) and how long vanished pods stay visible")
	f.StringSliceVar(&cfg.GRPCListen, "grpc-listen", []string{daemon.DefaultSocket}, "gRPC listen addresses: unix:///path (created mode 0600) or a loopback host:port (e.g. 127.0.0.1:9967 for port-forward); other addresses need --allow-unauthenticated-grpc")
	f.BoolVar(&cfg.TenantAuthorization, "tenant-authorization", false, "TCP callers (port-forward) must send a token for audience "+daemon.TenantAudience+" (TokenReview) and may read only namespaces where they may get dnsflows.isoobs.io (SubjectAccessReview), one per stream; the unix socket is not asked (docs/security.md)")
	f.BoolVar(&cfg.AllowUnauthenticatedNetwork, "allow-unauthenticated-grpc", false, "allow a non-loopback --grpc-listen: the API has no authentication, anyone who reaches the address reads every pod's DNS names")
	f.StringVar(&cfg.MetricsListen, "metrics-listen", ":9966", "address for /metrics, /healthz and /readyz (empty: off)")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig for pod names (default: in-cluster config)")
	f.BoolVar(&noKubernetes, "no-kubernetes", false, "do not contact the Kubernetes API (rows show pod UIDs and cgroup paths)")
	f.IntVar(&cfg.MaxTrackedPods, "max-pods", 1024, "pods with per-second history (more are counted in status only)")
	f.IntVar(&cfg.NamesPerPod, "names-per-pod", 64, "query names tracked per pod (Space-Saving capacity)")
	f.IntVar(&cfg.NamesPerNode, "names-per-node", 1024, "query names tracked node-wide (Space-Saving capacity)")
	f.Uint32Var(&cfg.KernelMaxPods, "kernel-max-pods", 0, "kernel per-cgroup map size (0: probe default)")
	f.Uint32Var(&cfg.KernelMaxNames, "kernel-max-names", 0, "kernel name table size per interval (0: probe default)")
	f.Uint32Var(&cfg.KernelMaxInflight, "kernel-max-inflight", 0, "kernel pending-query table size, queries awaiting their response (0: probe default, 1024)")
	f.Uint32Var(&cfg.KernelPodSlots, "kernel-pod-slots", 0, "pods counted on the kernel's fast path; others use the per-cgroup map (0: probe default, 256)")
	f.Uint32Var(&cfg.LatencySampleAbove, "latency-sample-above", bpf.DefaultLatencySampleAbove, "a pod sending more DNS queries a second than this has 1 in 2^k of them timed (enough for percentiles; each weighs 2^k); 0: time every query")
	f.DurationVar(&cfg.DNSTimeout, "dns-timeout", bpf.DefaultDNSTimeout, "a DNS query without its answer this long counts as a timeout of its pod (the resolver's default, resolv.conf timeout:5)")
	f.BoolVar(&cfg.TCPDisabled, "no-tcp", false, "do not load the TCP probe (top tcp then answers Unavailable on this node; top dns is not affected)")
	f.IntVar(&maxProcs, "gomaxprocs", defaultMaxProcs(),
		"Go's GOMAXPROCS (default 1, or $GOMAXPROCS): an agent that needs a few % of a core pays less in thread wake-ups with one (as node_exporter); 0: Go's default, the CPUs or the container's CPU limit")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	hubbleFlags.AddFlags(f, "")
	cmd.AddCommand(newResolveCommand())
	return cmd
}

// defaultMaxProcs is $GOMAXPROCS when set (the runtime already applied it), else 1.
func defaultMaxProcs() int {
	if n, err := strconv.Atoi(os.Getenv("GOMAXPROCS")); err == nil && n >= 0 {
		return n
	}
	return 1
}

// restConfig loads --kubeconfig, else the in-cluster config; nil when neither exists.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
		}
		return rc, nil
	}
	rc, err := rest.InClusterConfig()
	if err == rest.ErrNotInCluster {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("in-cluster Kubernetes config: %w (pass --kubeconfig or --no-kubernetes)", err)
	}
	return rc, nil
}

func hubbleDesc(cfg daemon.Config) string {
	if cfg.HubbleDisabled {
		return "off"
	}
	return cfg.Hubble.Server
}
