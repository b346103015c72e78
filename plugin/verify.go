package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/isoobs/isoobs/plugin/printers"
	"github.com/isoobs/isoobs/verify"
)

const verifyExample = `  # Check the whole stack: Cilium, Hubble, Tetragon, metrics endpoints, pipeline, isoobs daemons
  kubectl isoobs verify

  # Only Hubble and the metrics endpoints, as JSON for jq
  kubectl isoobs verify --component hubble,metrics -o json

  # After an install: wait up to 5 minutes until everything is healthy
  kubectl isoobs verify --wait --timeout 5m

  # Fail (exit 1) on warnings too, e.g. in CI
  kubectl isoobs verify --strict

  # Reach Hubble Relay through your own port-forward instead of verify's
  cilium hubble port-forward & kubectl isoobs verify --relay-address 127.0.0.1:4245

  # Active DNS check: a probe pod resolves an in-cluster, an NXDOMAIN and an external name;
  # the node's daemon, Hubble (where a DNS policy selects the pod) and the daemon's metrics
  # must have counted exactly those queries (e.g. 3 queries, 1 NXDOMAIN)
  kubectl isoobs verify --dns

  # ... on one node, in a namespace whose DNS policy selects app=crawler, as JSON
  kubectl isoobs verify --dns --dns-node worker-2 --dns-namespace tenant-jobs --dns-labels app=crawler -o json`

// ErrVerifyFailed is returned (exit status 1) when the stack is not healthy;
// the report has already said why.
var ErrVerifyFailed = errors.New("verify: the stack is not healthy (see the checks above)")

// VerifyOptions holds the flags of `kubectl isoobs verify`.
type VerifyOptions struct {
	ConfigFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	Output       string
	Components   []string
	Strict       bool
	Wait         bool
	Timeout      time.Duration
	Interval     time.Duration
	CheckTimeout time.Duration
	Edition      string
	RelayAddress string

	CiliumNamespace   string
	TetragonNamespace string
	IsoobsNamespace   string

	// The active DNS check (--dns).
	DNS             bool
	DNSNode         string
	DNSNamespace    string
	DNSImage        string
	DNSLabels       map[string]string
	DNSClusterName  string
	DNSNXDomainName string
	DNSExternalName string
	DNSTimeout      time.Duration

	// Set by Complete.
	intervalFlag bool
	changed      func(name string) bool
	isTerminal   func(io.Writer) bool
}

// NewVerifyOptions returns options with the flag defaults.
func NewVerifyOptions(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *VerifyOptions {
	return &VerifyOptions{
		ConfigFlags:       configFlags,
		IOStreams:         streams,
		Timeout:           5 * time.Minute,
		Interval:          5 * time.Second,
		CheckTimeout:      5 * time.Second,
		CiliumNamespace:   verify.DefaultNamespaces.Cilium,
		TetragonNamespace: verify.DefaultNamespaces.Tetragon,
		IsoobsNamespace:   verify.DefaultNamespaces.Isoobs,
		DNSClusterName:    verify.DefaultDNSClusterName,
		DNSNXDomainName:   verify.DefaultDNSNXDomainName,
		DNSExternalName:   verify.DefaultDNSExternalName,
		DNSTimeout:        time.Minute,
		isTerminal:        stdoutIsTerminal,
	}
}

// NewCmdVerify returns `kubectl isoobs verify`.
func NewCmdVerify(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewVerifyOptions(configFlags, streams)
	cmd := &cobra.Command{
		Use:   "verify [flags]",
		Short: "Check the observability stack end to end and say what to run next",
		Long: `Check what kubectl isoobs install set up (or a Cilium stack set up by hand), in
parallel and within seconds: the API server and nodes; the cilium agent, operator
and envoy; Hubble Relay (its ServerStatus, as hubble status prints it) and UI;
Tetragon; DNS Proxy HA (enterprise); the cilium-config settings against what
install sets; every metrics endpoint (9962, 9963, 9964, 9965, 2112), scraped
through the API server's pod proxy, against the metric names the pipeline's
allowlist expects; whether a CiliumNetworkPolicy with dns rules gives Hubble DNS
visibility; the metrics pipeline (Prometheus targets or the OpenTelemetry
collector's receivers); and the isoobs daemons, one per node.

With --dns it runs the active DNS check instead: a short-lived probe pod (the
daemon's own image, so nothing is pulled) on one node sends exactly one query for
an in-cluster name, one that must be NXDOMAIN and an external name; then three
lines say whether the node's isoobs daemon counted exactly those queries for the
pod, whether Hubble saw them (only where a DNS policy selects the pod; otherwise
"not checked") and whether the daemon's isoobs_dns_* metrics of the pod's
namespace/workload rose by exactly as much. The probe pod is deleted afterwards,
also on failure or Ctrl-C.

Each check is ok, warn or fail with a one-line detail and the command to run
next. Exit status: 0 when nothing failed, 1 on a failure (--strict: also on a
warning). Components: ` + strings.Join(verify.Components, ", ") + `.`,
		Example:      verifyExample,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(c *cobra.Command, args []string) error {
			if err := o.Complete(c, args); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(c.Context())
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.Components, "component", o.Components, "Only these components (comma-separated): "+strings.Join(verify.Components, ","))
	f.BoolVar(&o.Strict, "strict", o.Strict, "Exit 1 on warnings too")
	f.BoolVar(&o.Wait, "wait", o.Wait, "Re-run the checks until the stack is healthy or --timeout passes, showing progress")
	f.DurationVar(&o.Timeout, "timeout", o.Timeout, "With --wait: how long to wait")
	f.DurationVar(&o.Interval, "interval", o.Interval, "With --wait: time between runs")
	f.DurationVar(&o.CheckTimeout, "check-timeout", o.CheckTimeout, "Give up on one check after this long")
	f.StringVar(&o.Edition, "edition", o.Edition, "Cilium edition: oss or enterprise (default: detected from the cilium image)")
	f.StringVar(&o.RelayAddress, "relay-address", o.RelayAddress, "Reach Hubble Relay at this host:port (e.g. a running cilium hubble port-forward) instead of port-forwarding")
	f.StringVar(&o.CiliumNamespace, "cilium-namespace", o.CiliumNamespace, "Namespace of Cilium, Hubble Relay and UI")
	f.StringVar(&o.TetragonNamespace, "tetragon-namespace", o.TetragonNamespace, "Namespace of Tetragon")
	f.StringVar(&o.IsoobsNamespace, "isoobs-namespace", o.IsoobsNamespace, "Namespace of the isoobs daemons")
	f.BoolVar(&o.DNS, "dns", o.DNS, "Run the active DNS check: a probe pod's queries must be counted exactly by the daemon, Hubble and the metrics")
	f.StringVar(&o.DNSNode, "dns-node", o.DNSNode, "With --dns: run the probe on this node (default: the first node whose daemon is Ready)")
	f.StringVar(&o.DNSNamespace, "dns-namespace", o.DNSNamespace, "With --dns: namespace of the probe pod (default: --isoobs-namespace)")
	f.StringVar(&o.DNSImage, "dns-image", o.DNSImage, "With --dns: the probe's image (default: the daemon's image on that node)")
	f.StringToStringVar(&o.DNSLabels, "dns-labels", o.DNSLabels, "With --dns: extra labels of the probe pod, e.g. app=crawler (so a DNS policy selects it)")
	f.StringVar(&o.DNSClusterName, "dns-cluster-name", o.DNSClusterName, "With --dns: the in-cluster name to resolve (must answer)")
	f.StringVar(&o.DNSNXDomainName, "dns-nxdomain-name", o.DNSNXDomainName, "With --dns: the name that must be NXDOMAIN")
	f.StringVar(&o.DNSExternalName, "dns-external-name", o.DNSExternalName, "With --dns: the external name to resolve (must answer)")
	f.DurationVar(&o.DNSTimeout, "dns-timeout", o.DNSTimeout, "With --dns: give up after this long (pod start, probe and counting); the pod is deleted either way")
	printers.ReportOutputs.AddFlag(cmd, &o.Output)
	_ = cmd.RegisterFlagCompletionFunc("component", cobra.FixedCompletions(verify.Components, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("edition", cobra.FixedCompletions([]string{"oss", "enterprise"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// Complete normalizes the flags.
func (o *VerifyOptions) Complete(cmd *cobra.Command, _ []string) error {
	var err error
	o.changed = func(string) bool { return false }
	if cmd != nil {
		o.intervalFlag = cmd.Flags().Changed("interval")
		o.changed = cmd.Flags().Changed
	}
	o.Components, err = verify.ParseComponents(o.Components)
	return err
}

// verifyOptions builds the clients from the kubectl flags (after Validate,
// so bad flags are reported without touching the cluster).
func (o *VerifyOptions) verifyOptions() (verify.Options, error) {
	if o.ConfigFlags == nil {
		return verify.Options{}, errors.New("no kubeconfig flags")
	}
	cfg, err := o.ConfigFlags.ToRESTConfig()
	if err != nil {
		return verify.Options{}, fmt.Errorf("cannot load a kubeconfig: %w (pass --kubeconfig, or --context)", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return verify.Options{}, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return verify.Options{}, err
	}
	return verify.Options{
		Client: client, Dynamic: dyn, Config: cfg,
		Namespaces:   verify.Namespaces{Cilium: o.CiliumNamespace, Tetragon: o.TetragonNamespace, Isoobs: o.IsoobsNamespace},
		Edition:      o.Edition,
		Components:   o.Components,
		CheckTimeout: o.CheckTimeout,
		RelayAddress: o.RelayAddress,
	}, nil
}

// Validate checks the flags together; each error says what to run instead.
func (o *VerifyOptions) Validate() error {
	var err error
	if o.Output, err = printers.ReportOutputs.Parse(o.Output); err != nil {
		return err
	}
	switch o.Edition {
	case "", "oss", "enterprise":
	default:
		return fmt.Errorf("unknown --edition %q: use oss or enterprise (or leave it out to detect it)", o.Edition)
	}
	if o.CheckTimeout <= 0 {
		return fmt.Errorf("--check-timeout %s must be positive, e.g. --check-timeout 10s", o.CheckTimeout)
	}
	if o.Wait && o.Timeout <= 0 {
		return fmt.Errorf("--timeout %s must be positive with --wait, e.g. --timeout 5m", o.Timeout)
	}
	if o.Wait && o.Interval <= 0 {
		return fmt.Errorf("--interval %s must be positive, e.g. --interval 5s", o.Interval)
	}
	if !o.Wait && o.intervalFlag {
		return errors.New("--interval only applies with --wait: add --wait or drop --interval")
	}
	for _, ns := range []string{o.CiliumNamespace, o.TetragonNamespace, o.IsoobsNamespace} {
		if ns == "" {
			return errors.New("a namespace flag is empty: drop it to use the default")
		}
	}
	return o.validateDNS()
}

// Run runs the checks (and with --wait repeats them), prints the report and
// returns ErrVerifyFailed when it is not healthy.
func (o *VerifyOptions) Run(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.DNS {
		return o.runDNS(ctx)
	}
	opts, err := o.verifyOptions()
	if err != nil {
		return err
	}
	var rep *verify.Report
	if o.Wait {
		wctx, cancel := context.WithTimeout(ctx, o.Timeout)
		defer cancel()
		start := time.Now()
		rep, err = verify.Wait(wctx, opts, o.Strict, o.Interval, func(r *verify.Report) {
			fmt.Fprintf(o.ErrOut, "waiting (%s/%s): %d ok, %d warnings, %d failures: %s\n",
				time.Since(start).Round(time.Second), o.Timeout, r.Counts[verify.StatusOK], r.Counts[verify.StatusWarn],
				r.Counts[verify.StatusFail], strings.Join(append(r.Failing(verify.StatusFail), o.warnIDs(r)...), ", "))
		})
	} else {
		rep, err = verify.Run(ctx, opts)
	}
	if err != nil {
		return err
	}
	switch o.Output {
	case printers.OutputJSON:
		err = rep.WriteJSON(o.Out)
	case printers.OutputYAML:
		err = printers.WriteObject(o.Out, o.Output, rep)
	default:
		err = rep.Format(o.Out, verify.FormatOptions{Color: o.isTerminal(o.Out)})
	}
	if err != nil {
		return err
	}
	if !rep.Healthy(o.Strict) {
		return ErrVerifyFailed
	}
	return nil
}

func (o *VerifyOptions) warnIDs(r *verify.Report) []string {
	if !o.Strict {
		return nil
	}
	return r.Failing(verify.StatusWarn)
}

// dnsFlags are the flags that only apply with --dns.
var dnsFlags = []string{"dns-node", "dns-namespace", "dns-image", "dns-labels", "dns-cluster-name", "dns-nxdomain-name", "dns-external-name", "dns-timeout"}

// validateDNS checks --dns and its flags, and what --dns does not combine with.
func (o *VerifyOptions) validateDNS() error {
	changed := o.changed
	if changed == nil {
		changed = func(string) bool { return false }
	}
	if !o.DNS {
		for _, f := range dnsFlags {
			if changed(f) {
				return fmt.Errorf("--%s only applies with --dns: add --dns or drop --%s", f, f)
			}
		}
		return nil
	}
	switch {
	case o.Wait:
		return errors.New("--dns runs once (it starts a probe pod): drop --wait, or run kubectl isoobs verify --wait first and --dns after it")
	case len(o.Components) > 0:
		return errors.New("--dns runs the active DNS check alone: drop --component (run kubectl isoobs verify --component ... separately)")
	case o.DNSTimeout <= 0:
		return fmt.Errorf("--dns-timeout %s must be positive, e.g. --dns-timeout 2m", o.DNSTimeout)
	case changed("dns-namespace") && o.DNSNamespace == "":
		return errors.New("--dns-namespace is empty: drop it to run the probe in --isoobs-namespace")
	case changed("dns-node") && o.DNSNode == "":
		return errors.New("--dns-node is empty: drop it to use the first node whose daemon is Ready")
	case changed("dns-image") && o.DNSImage == "":
		return errors.New("--dns-image is empty: drop it to use the daemon's own image")
	}
	for k := range o.DNSLabels {
		if k == "app.kubernetes.io/name" || k == "app.kubernetes.io/managed-by" {
			return fmt.Errorf("--dns-labels %s: the probe pod sets this label itself; use another key", k)
		}
	}
	return verify.ValidateDNSNames(o.DNSClusterName, o.DNSNXDomainName, o.DNSExternalName)
}

// runDNS runs the active DNS check and prints its report.
func (o *VerifyOptions) runDNS(ctx context.Context) error {
	vo, err := o.verifyOptions()
	if err != nil {
		return err
	}
	ns := o.DNSNamespace
	if ns == "" {
		ns = o.IsoobsNamespace
	}
	rep, err := verify.RunDNSCheck(ctx, verify.DNSCheckOptions{
		Client: vo.Client, Dynamic: vo.Dynamic, Config: vo.Config,
		DaemonNamespace: o.IsoobsNamespace,
		Namespace:       ns, Labels: o.DNSLabels, Node: o.DNSNode, Image: o.DNSImage,
		ClusterName: o.DNSClusterName, NXDomainName: o.DNSNXDomainName, ExternalName: o.DNSExternalName,
		Timeout: o.DNSTimeout,
		Progress: func(format string, args ...any) {
			fmt.Fprintf(o.ErrOut, "verify --dns: "+format+"\n", args...)
		},
	})
	if err != nil {
		return fmt.Errorf("verify --dns: %w", err)
	}
	switch o.Output {
	case printers.OutputJSON:
		err = rep.WriteJSON(o.Out)
	case printers.OutputYAML:
		err = printers.WriteObject(o.Out, o.Output, rep)
	default:
		err = rep.Format(o.Out, verify.FormatOptions{Color: o.isTerminal(o.Out)})
	}
	if err != nil {
		return err
	}
	if !rep.Healthy(o.Strict) {
		return ErrVerifyFailed
	}
	return nil
}
