package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/isoobs/isoobs/install"
	"github.com/isoobs/isoobs/install/values"
)

const installExample = `  # Show what would be installed (rendered manifests), touching nothing
  kubectl isoobs install --dry-run

  # Print the merged Helm values of every component
  kubectl isoobs install --show-values

  # Cilium + Hubble + Tetragon + Prometheus/Grafana + the isoobs daemon, waiting for pods
  kubectl isoobs install --profile kubeadm --pod-cidr 172.20.0.0/16 --wait

  # EKS in ENI mode, Isovalent Enterprise, metrics to Splunk Observability Cloud
  kubectl isoobs install --profile eks-eni --edition enterprise --pipeline splunk \
    --splunk-realm us1 --splunk-token-file ./token --cluster-name isovalent-demo

  # Air-gapped: charts from local directories instead of https://helm.cilium.io
  kubectl isoobs install --chart-dir cilium=./charts/cilium --chart-dir tetragon=./charts/tetragon \
    --chart-dir prometheus=./cilium/examples/kubernetes/addons/prometheus

  # Change one chart value (kept on later runs until --reset-overrides)
  kubectl isoobs install --set cilium.hubble.ui.enabled=false -f tetragon=tetragon-values.yaml

  # Take over a Cilium someone else installed with Helm (shows the values diff first without --adopt)
  kubectl isoobs install --components cilium --adopt`

// InstallOptions holds the flags of `kubectl isoobs install`.
type InstallOptions struct {
	ConfigFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	Profile, Edition, Pipeline string
	Components                 []string
	ClusterName                string
	ClusterID                  int
	K8sServiceHost             string
	K8sServicePort             int
	PodCIDR                    string
	ChartDirs, Repos, Versions map[string]string
	Sets, SetStrings, Values   []string
	DryRun, ShowValues, Wait   bool
	Timeout                    time.Duration
	Adopt, ResetOverrides      bool
	NoRedact, NoExport         bool
	SplunkRealm                string
	SplunkTokenFile            string
	SplunkEnvironment          string
	SplunkNoGateway            bool
	SplunkNoCertManager        bool
	DaemonImage                string
	DaemonInterval             time.Duration
	HubbleAddress              string

	// Set by Complete.
	opts install.Options
	// getenv reads SPLUNK_ACCESS_TOKEN (tests replace it).
	getenv func(string) string
}

// NewInstallOptions returns options with the flag defaults.
func NewInstallOptions(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *InstallOptions {
	d := values.Defaults()
	return &InstallOptions{
		ConfigFlags:       configFlags,
		IOStreams:         streams,
		Profile:           string(d.Profile),
		Edition:           string(d.Edition),
		Pipeline:          string(d.Pipeline),
		ClusterName:       d.ClusterName,
		PodCIDR:           d.PodCIDR,
		Timeout:           5 * time.Minute,
		SplunkEnvironment: d.Splunk.Environment,
		DaemonInterval:    time.Second,
		HubbleAddress:     d.HubbleAddress,
		getenv:            os.Getenv,
	}
}

// NewCmdInstall returns `kubectl isoobs install`.
func NewCmdInstall(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewInstallOptions(configFlags, streams)
	cmd := &cobra.Command{
		Use:   "install [flags]",
		Short: "Install or upgrade Cilium, Hubble, Tetragon, the metrics pipeline and the isoobs daemon",
		Long: `Install the eBPF observability stack, each component a Helm release:

  cilium           Cilium with Hubble (relay with TLS, UI, the seed metric set on :9965), agent,
                   operator and Envoy metrics (:9962/:9963/:9964), L7 redaction, flow export to file
  cilium-dnsproxy  Isovalent DNS Proxy HA (--edition enterprise only)
  tetragon         Tetragon with Prometheus metrics on :2112
  prometheus       Prometheus + Grafana with the Cilium, Hubble, Operator and L7 HTTP dashboards
                   (--pipeline prometheus)
  splunk-otel-collector  Splunk OpenTelemetry Collector scraping every component (--pipeline splunk)
  isoobs           the isoobs node daemon (chart embedded in this binary)

Install is install-or-upgrade: a second run with the same flags changes nothing and
says so. Values are generated afresh for the chart being installed; --set/-f overrides
are remembered (in the Secret isoobs/isoobs-install-state) until --reset-overrides.
A release someone else installed is only taken over with --adopt (the values diff is
shown otherwise; secrets such as tokens, passwords and keys show as <redacted>, also in
--show-values, --dry-run and errors). ServiceMonitors are created only when the Prometheus
operator CRDs exist. The isoobs, tetragon and otel-splunk namespaces are labeled
pod-security.kubernetes.io/enforce=privileged (their node agents need hostPaths and
capabilities beyond baseline); a namespace enforcing another level is refused. The daemons
mount only the directory of Hubble's socket, never /var/run/cilium.`,
		Example:      installExample,
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
	f.StringVar(&o.Profile, "profile", o.Profile, "Cluster profile: default|kubeadm|eks-eni")
	f.StringVar(&o.Edition, "edition", o.Edition, "oss (helm.cilium.io charts) or enterprise (Isovalent charts, Timescape, DNS Proxy HA)")
	f.StringVar(&o.Pipeline, "pipeline", o.Pipeline, "Metrics pipeline: prometheus|splunk|none")
	f.StringSliceVar(&o.Components, "components", o.Components, "Only these components (default: all for the edition and pipeline), e.g. cilium,isoobs")
	f.StringVar(&o.ClusterName, "cluster-name", o.ClusterName, "Cluster name (Cilium cluster.name, collector clusterName)")
	f.IntVar(&o.ClusterID, "cluster-id", o.ClusterID, "Cilium cluster id (0-511)")
	f.StringVar(&o.K8sServiceHost, "k8s-service-host", o.K8sServiceHost, "API server host as nodes reach it (kubeadm/eks-eni; default: the kubeconfig's server)")
	f.IntVar(&o.K8sServicePort, "k8s-service-port", o.K8sServicePort, "API server port as nodes reach it (default: the kubeconfig's server port)")
	f.StringVar(&o.PodCIDR, "pod-cidr", o.PodCIDR, "Pod CIDR of the kubeadm profile's cluster-pool IPAM")
	f.StringToStringVar(&o.ChartDirs, "chart-dir", o.ChartDirs, "COMPONENT=DIR: load the chart from a directory or .tgz (air-gapped clusters)")
	f.StringToStringVar(&o.Repos, "repo", o.Repos, "COMPONENT=URL: chart repository (mirror) for a component")
	f.StringToStringVar(&o.Versions, "version", o.Versions, "COMPONENT=VERSION: chart version instead of the tested default")
	f.StringArrayVar(&o.Sets, "set", o.Sets, "COMPONENT.KEY=VALUE chart value, e.g. cilium.hubble.ui.enabled=false (repeatable)")
	f.StringArrayVar(&o.SetStrings, "set-string", o.SetStrings, "COMPONENT.KEY=VALUE chart value forced to a string (repeatable)")
	f.StringArrayVarP(&o.Values, "values", "f", o.Values, "Values file: COMPONENT=FILE, or FILE with components as top-level keys (repeatable)")
	f.BoolVar(&o.DryRun, "dry-run", o.DryRun, "Print the rendered manifests of what would change; change nothing")
	f.BoolVar(&o.ShowValues, "show-values", o.ShowValues, "Print the merged values of every component and stop (with --dry-run: then the manifests)")
	f.BoolVar(&o.Wait, "wait", o.Wait, "Wait for each component's pods to be ready, showing progress")
	f.DurationVar(&o.Timeout, "timeout", o.Timeout, "Per-component time limit for Helm and --wait")
	f.BoolVar(&o.Adopt, "adopt", o.Adopt, "Take over releases someone else installed (uninstall leaves them in place)")
	f.BoolVar(&o.ResetOverrides, "reset-overrides", o.ResetOverrides, "Forget --set/-f values remembered from earlier runs")
	f.BoolVar(&o.NoRedact, "no-redact", o.NoRedact, "Do not redact L7 URL queries, user info and auth headers in Hubble flows")
	f.BoolVar(&o.NoExport, "no-export", o.NoExport, "Do not export Hubble flows to /var/run/cilium/hubble/events.log")
	f.StringVar(&o.SplunkRealm, "splunk-realm", o.SplunkRealm, "Splunk Observability realm, e.g. us1 (--pipeline splunk)")
	f.StringVar(&o.SplunkTokenFile, "splunk-token-file", o.SplunkTokenFile, "File holding the Splunk access token (default: $SPLUNK_ACCESS_TOKEN); stored only in a Secret")
	f.StringVar(&o.SplunkEnvironment, "splunk-environment", o.SplunkEnvironment, "Splunk environment name")
	f.BoolVar(&o.SplunkNoGateway, "splunk-no-gateway", o.SplunkNoGateway, "Agents send to Splunk directly instead of through a gateway Deployment")
	f.BoolVar(&o.SplunkNoCertManager, "splunk-no-cert-manager", o.SplunkNoCertManager, "No cert-manager mTLS between collector agents and gateway")
	f.StringVar(&o.DaemonImage, "daemon-image", o.DaemonImage, "isoobs daemon image (repository[:tag][@digest]); default: the image this plugin was released with, pinned by digest (e.g. a copy in a private registry: registry.example/isoobs/isoobs-daemon@sha256:...)")
	f.DurationVar(&o.DaemonInterval, "daemon-interval", o.DaemonInterval, "How often the daemon reads its probe maps")
	f.StringVar(&o.HubbleAddress, "hubble-address", o.HubbleAddress, "Hubble server the daemon reads (unix:///path, host:port or off; default: /var/run/cilium/hubble-socket/hubble.sock, where this install puts Cilium's; on a Cilium installed otherwise, its own socket if that is in a directory of its own, else off; off when the cluster runs no Cilium)")
	return cmd
}

// Complete turns the flags into install.Options.
func (o *InstallOptions) Complete(cmd *cobra.Command, _ []string) error {
	v := values.Defaults()
	v.Profile, v.Edition, v.Pipeline = values.Profile(o.Profile), values.Edition(o.Edition), values.Pipeline(o.Pipeline)
	v.ClusterName, v.ClusterID, v.PodCIDR = o.ClusterName, o.ClusterID, o.PodCIDR
	v.K8sServiceHost, v.K8sServicePort = o.K8sServiceHost, o.K8sServicePort
	if v.Profile != values.ProfileDefault && (v.K8sServiceHost == "" || v.K8sServicePort == 0) && o.ConfigFlags != nil {
		if cfg, err := o.ConfigFlags.ToRESTConfig(); err == nil {
			host, port, err := values.HostPort(cfg.Host)
			if err != nil {
				return err
			}
			if v.K8sServiceHost == "" {
				v.K8sServiceHost = host
			}
			if v.K8sServicePort == 0 {
				v.K8sServicePort = port
			}
		}
	}
	v.Redact.Enabled = !o.NoRedact
	v.Export.Enabled = !o.NoExport
	v.Splunk.Realm, v.Splunk.Environment = o.SplunkRealm, o.SplunkEnvironment
	v.Splunk.Gateway, v.Splunk.CertManager = !o.SplunkNoGateway, !o.SplunkNoCertManager
	v.DaemonImage, v.DaemonInterval, v.HubbleAddress = o.DaemonImage, o.DaemonInterval.String(), o.HubbleAddress
	o.opts = install.Options{
		Values: v, DryRun: o.DryRun, ShowValues: o.ShowValues, Wait: o.Wait, Timeout: o.Timeout,
		Adopt: o.Adopt, ResetOverrides: o.ResetOverrides, Sources: map[install.Component]install.Source{},
		HubbleAddressAuto: cmd == nil || !cmd.Flags().Changed("hubble-address"),
	}
	for flag, m := range map[string]map[string]string{"chart-dir": o.ChartDirs, "repo": o.Repos, "version": o.Versions} {
		for name, val := range m {
			c := install.Component(name)
			if name == "splunk" {
				c = install.ComponentSplunk
			}
			if !slices.Contains(install.AllComponents, c) {
				return fmt.Errorf("--%s %s=%s: %q is not a component; use one of %s", flag, name, val, name, componentList())
			}
			src := o.opts.Sources[c]
			switch flag {
			case "chart-dir":
				src.Dir = val
			case "repo":
				src.Repo = val
			case "version":
				src.Version = val
			}
			o.opts.Sources[c] = src
		}
	}
	return nil
}

// Validate checks the flags together and reads the token.
func (o *InstallOptions) Validate() error {
	if err := o.opts.Values.Validate(); err != nil {
		return err
	}
	if o.DaemonInterval <= 0 {
		return fmt.Errorf("--daemon-interval %s must be positive, e.g. 1s", o.DaemonInterval)
	}
	if o.Timeout <= 0 {
		return fmt.Errorf("--timeout %s must be positive, e.g. 5m", o.Timeout)
	}
	var err error
	if o.opts.Components, err = install.ParseComponents(o.Components, o.opts.Values.Edition, o.opts.Values.Pipeline); err != nil {
		return err
	}
	if o.opts.Overrides, err = install.ParseOverrides(o.Values, o.Sets, o.SetStrings); err != nil {
		return err
	}
	for c := range o.opts.Overrides {
		if !slices.Contains(o.opts.Components, c) {
			return fmt.Errorf("values are set for %s, which this run does not install (components: %s): add it to --components or drop its --set/-f", c, joinComponents(o.opts.Components))
		}
	}
	if slices.Contains(o.opts.Components, install.ComponentSplunk) {
		token := ""
		if o.SplunkTokenFile != "" {
			data, err := os.ReadFile(o.SplunkTokenFile)
			if err != nil {
				return fmt.Errorf("--splunk-token-file: %w", err)
			}
			token = strings.TrimSpace(string(data))
			if token == "" {
				return fmt.Errorf("--splunk-token-file %s is empty: put the Splunk Observability access token in it", o.SplunkTokenFile)
			}
		} else {
			token = strings.TrimSpace(o.getenv("SPLUNK_ACCESS_TOKEN"))
		}
		if token == "" {
			return errors.New("the splunk pipeline needs a Splunk Observability access token: pass --splunk-token-file FILE or set SPLUNK_ACCESS_TOKEN (it goes only into a Secret, never into Helm values, ConfigMaps or output)")
		}
		o.opts.SplunkToken = token
	}
	return nil
}

// Run installs.
func (o *InstallOptions) Run(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	inst, err := install.New(o.ConfigFlags, o.Out)
	if err != nil {
		return err
	}
	if _, err := inst.Install(ctx, o.opts); err != nil {
		return err
	}
	if !o.ShowValues && slices.Contains(o.opts.Components, install.ComponentTetragon) && o.opts.Values.Edition == values.EditionOSS {
		fmt.Fprintln(o.ErrOut, "note: "+values.TetragonOSSGaps)
	}
	return nil
}

// UninstallOptions holds the flags of `kubectl isoobs uninstall`.
type UninstallOptions struct {
	ConfigFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams
	DryRun  bool
	Wait    bool
	Timeout time.Duration
}

const uninstallExample = `  # What would be removed
  kubectl isoobs uninstall --dry-run

  # Remove everything install created and wait for it to be gone
  kubectl isoobs uninstall --wait`

// NewCmdUninstall returns `kubectl isoobs uninstall`.
func NewCmdUninstall(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &UninstallOptions{ConfigFlags: configFlags, IOStreams: streams, Timeout: 5 * time.Minute}
	cmd := &cobra.Command{
		Use:   "uninstall [flags]",
		Short: "Remove exactly what kubectl isoobs install created",
		Long: `Remove the Helm releases, Secrets and namespaces kubectl isoobs install created,
newest component first. Releases taken over with --adopt and anything else are left in place.
A namespace install created is deleted only when it holds nothing isoobs did not create;
otherwise it is left in place and those objects are named.`,
		Example:      uninstallExample,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(c *cobra.Command, _ []string) error {
			if o.Timeout <= 0 {
				return fmt.Errorf("--timeout %s must be positive, e.g. 5m", o.Timeout)
			}
			ctx := c.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			inst, err := install.New(o.ConfigFlags, o.Out)
			if err != nil {
				return err
			}
			_, err = inst.Uninstall(ctx, install.UninstallOptions{DryRun: o.DryRun, Wait: o.Wait, Timeout: o.Timeout})
			return err
		},
	}
	cmd.Flags().BoolVar(&o.DryRun, "dry-run", o.DryRun, "Print what would be removed")
	cmd.Flags().BoolVar(&o.Wait, "wait", o.Wait, "Wait until the removed releases' resources are gone")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", o.Timeout, "Per-release time limit")
	return cmd
}

func componentList() string { return joinComponents(install.AllComponents) }

func joinComponents(cs []install.Component) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = string(c)
	}
	return strings.Join(parts, ", ")
}
