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
  cilium hubble port-forward & kubectl isoobs verify --relay-address 127.0.0.1:4245`

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

	// Set by Complete.
	intervalFlag bool
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
	printers.ReportOutputs.AddFlag(cmd, &o.Output)
	_ = cmd.RegisterFlagCompletionFunc("component", cobra.FixedCompletions(verify.Components, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("edition", cobra.FixedCompletions([]string{"oss", "enterprise"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// Complete normalizes the flags.
func (o *VerifyOptions) Complete(cmd *cobra.Command, _ []string) error {
	var err error
	if cmd != nil {
		o.intervalFlag = cmd.Flags().Changed("interval")
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
	return nil
}

// Run runs the checks (and with --wait repeats them), prints the report and
// returns ErrVerifyFailed when it is not healthy.
func (o *VerifyOptions) Run(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
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
