// Package plugin is the command layer of kubectl-isoobs: cobra commands,
// flags and their validation. The work itself lives in plugin/top (merge,
// streams), plugin/printers and plugin/tui.
package plugin

import (
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

const rootExample = `  # Who is flooding DNS? Live, cluster-wide, from every node's daemon
  kubectl isoobs top dns -A

  # The same from one daemon on this node
  kubectl isoobs top dns --daemon unix:///run/isoobs/isoobs.sock

  # Install the stack, then check it
  kubectl isoobs install --profile kubeadm --wait
  kubectl isoobs verify

  # Run the probes in-process on this host (root) for one 10-second count
  sudo kubectl isoobs top dns --local --duration 10s

  # Print the version
  kubectl isoobs version`

// NewRootCmd returns the `kubectl isoobs` command with every subcommand.
// The kubectl connection flags (--kubeconfig, --context, -n, --as, ...) are
// shared by all subcommands.
func NewRootCmd(streams genericiooptions.IOStreams) *cobra.Command {
	configFlags := genericclioptions.NewConfigFlags(true)
	cmd := &cobra.Command{
		Use:   "isoobs",
		Short: "eBPF observability for Cilium clusters: who is flooding DNS, right now",
		Long: `kubectl isoobs answers incident questions from the isoobs node daemons' own eBPF
probes, within seconds and without needing a Cilium L7 DNS policy.

Commands:
  top dns    live per-pod DNS query rates, error codes, latency and top names
  top tcp    live per-pod TCP connect failures, resets, retransmits, bytes and RTT
  top drops  live per-pod packets the kernel dropped, by reason
  status     every node's isoobs daemon: probes, counting since, map fill, lost events
  install    install or upgrade Cilium+Hubble, Tetragon, a metrics pipeline and the daemons
  uninstall  remove what install created
  verify     check the whole stack end to end and say what to run next
  version    print the plugin version
  completion shell completion (kubectl isoobs completion kubectl: for kubectl's own)`,
		Example:      rootExample,
		SilenceUsage: true,
		Annotations:  map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl isoobs"},
		// Our completion command adds the kubectl_complete-isoobs script to cobra's shells.
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	configFlags.AddFlags(cmd.PersistentFlags())
	cmd.SetIn(streams.In)
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	cmd.AddCommand(NewCmdTop(configFlags, streams))
	cmd.AddCommand(NewCmdStatus(configFlags, streams))
	cmd.AddCommand(NewCmdVerify(configFlags, streams))
	cmd.AddCommand(NewCmdInstall(configFlags, streams))
	cmd.AddCommand(NewCmdUninstall(configFlags, streams))
	cmd.AddCommand(NewCmdVersion(streams))
	cmd.AddCommand(NewCmdCompletion(streams))
	return cmd
}

// NewCmdTop returns `kubectl isoobs top`, the parent of the top views.
func NewCmdTop(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Live top views of what the node daemons see",
		Long: `Live top views of what the isoobs node daemons see.

Available views:
  dns    per-pod DNS query rates, NXDOMAIN/SERVFAIL, latency and top query names
  tcp    per-pod TCP opens, connect failures, resets, retransmits, bytes and RTT
  drops  per-pod packets the kernel dropped, by the kernel's drop reason
  http   per-workload HTTP requests/s, 4xx/5xx, latency and top paths (Hubble L7 flows)`,
		Example: `  # Who is flooding DNS, cluster-wide
  kubectl isoobs top dns

  # Which server answered: one row per DNS server
  kubectl isoobs top dns -A --group-by server

  # Whose connections fail or retransmit, and HTTP golden signals
  kubectl isoobs top tcp -A
  kubectl isoobs top http -A --group-by service`,
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return c.Help()
		},
	}
	cmd.AddCommand(NewCmdTopDNS(configFlags, streams))
	cmd.AddCommand(NewCmdTopTCP(configFlags, streams))
	cmd.AddCommand(NewCmdTopDrops(configFlags, streams))
	cmd.AddCommand(NewCmdTopHTTP(configFlags, streams))
	return cmd
}
