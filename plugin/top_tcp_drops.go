package plugin

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/yaml"

	"github.com/isoobs/isoobs/plugin/printers"
	"github.com/isoobs/isoobs/plugin/top"
)

const topDropsExample = `  # Who is losing packets, and why? Live, every node
  kubectl isoobs top drops -A

  # Drops over the next 5 seconds by workload, as JSON
  kubectl isoobs top drops --duration 5s --group-by workload -o json`

// NewCmdTopDrops returns `kubectl isoobs top drops`: the TCP view's options and sources, the
// daemons' drop counts (DIMENSION_DROPS).
func NewCmdTopDrops(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &TopTCPOptions{src: NewTopDNSOptions(configFlags, streams), Sort: top.DropSortKeys[0], GroupBy: top.GroupByPod, drops: true}
	cmd := &cobra.Command{
		Use:   "drops [flags]",
		Short: "Live per-pod packets the kernel dropped, by the kernel's drop reason",
		Long: `Show which pods' packets the kernel drops, and why: the isoobs daemon's eBPF
probe counts every kfree_skb drop by its reason as the kernel names it
(NETFILTER_DROP, NO_SOCKET, TCP_CSUM, SOCKET_RCVBUFF, ...), attributed to the pod
whose socket sent or was to receive the packet (never to a host process).
Packets dropped before any socket was found (netfilter in the pod's network
namespace, a port nobody listens on, ...) are the pod's whose address (IPv4 or
IPv6) they were sent to; those to no pod of the node (the node's own address,
which hostNetwork pods report as theirs, an address two pods claim, a packet
without one) are no pod's: the footer sums them node-wide by reason
("noSocket" in JSON). Where the kernel
dropped packets (the function, per reason) is node-wide ("locations").

With Hubble (the daemon's, as for top dns), Cilium's datapath drops are merged:
a pod's row shows Hubble's reasons (POLICY_DENIED, ...) beside the kernel's in
the HUBBLE column, without adding to its packets (the kernel frees the packets
Cilium drops too and the probe counts them, mostly among the drops without a
socket: adding both would count them twice); a pod only Hubble reports is a row
of its own.
--source ebpf|hubble shows one side ("sources" in JSON).

Sources, flags and outputs are those of top tcp.`,
		Example:      topDropsExample,
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
	addTopTCPFlags(cmd, o, top.DropSortKeys)
	cmd.Flags().StringVar(&o.Source, "source", "all", "Whose drops: all (the probe's, with Hubble's beside them and pods only Hubble reports), ebpf or hubble")
	_ = cmd.RegisterFlagCompletionFunc("source", cobra.FixedCompletions(Sources, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// printDropFrame writes one drop frame as a table (wide or not), one JSON line, or YAML.
func printDropFrame(w io.Writer, f top.DropFrame, output string, noHeaders bool, yamlDocs *int) error {
	switch output {
	case printers.OutputJSON:
		return json.NewEncoder(w).Encode(f)
	case printers.OutputYAML:
		b, err := yaml.Marshal(f)
		if err != nil {
			return err
		}
		if *yamlDocs > 0 {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return err
			}
		}
		*yamlDocs++
		_, err = w.Write(b)
		return err
	}
	wide := output == printers.OutputWide
	var cols []printers.Column[top.DropRow]
	col := func(h string, v func(r *top.DropRow) string) {
		cols = append(cols, printers.Column[top.DropRow]{Header: h, Value: v})
	}
	switch f.GroupBy {
	case top.GroupByNamespace:
		col("NAMESPACE", func(r *top.DropRow) string { return tcpDash(r.Namespace) })
	case top.GroupByNode:
		col("NODE", func(r *top.DropRow) string { return tcpDash(r.Node) })
	case top.GroupByWorkload:
		col("NAMESPACE", func(r *top.DropRow) string { return tcpDash(r.Namespace) })
		col("WORKLOAD", func(r *top.DropRow) string { return dropWorkload(r) })
	default:
		col("NAMESPACE", func(r *top.DropRow) string { return tcpDash(r.Namespace) })
		col("POD", func(r *top.DropRow) string { return tcpDash(tcpFirst(r.Pod, r.PodUID, r.Cgroup)) })
		col("WORKLOAD", func(r *top.DropRow) string { return dropWorkload(r) })
		col("NODE", func(r *top.DropRow) string { return tcpDash(r.Node) })
	}
	col("DROPS/S", func(r *top.DropRow) string { return tcpF1(r.PacketsPerSecond) })
	col("PACKETS", func(r *top.DropRow) string { return tcpU(r.Packets) })
	if wide {
		col("BYTES", func(r *top.DropRow) string { return tcpU(r.Bytes) })
	}
	n := 3
	if wide {
		n = 10
	}
	col("REASONS", func(r *top.DropRow) string { return dropReasons(r.Reasons, n) })
	hubble := wide
	for i := range f.Rows {
		hubble = hubble || len(f.Rows[i].HubbleReasons) > 0
	}
	if hubble {
		col("HUBBLE", func(r *top.DropRow) string {
			if len(r.HubbleReasons) == 0 {
				return "-"
			}
			return dropReasons(r.HubbleReasons, n)
		})
	}
	if err := printers.WriteColumns(w, cols, f.Rows, noHeaders); err != nil {
		return err
	}
	if f.Truncated > 0 {
		fmt.Fprintf(w, "(%d more rows; --limit 0 shows all)\n", f.Truncated)
	}
	if len(f.Rows) == 0 {
		fmt.Fprintln(w, "(no drops of pods' packets)")
	}
	if f.NoSocket.Packets > 0 {
		fmt.Fprintf(w, "(no socket, no pod's: %d packets: %s)\n", f.NoSocket.Packets, dropReasons(f.NoSocket.Reasons, n))
	}
	if len(f.Locations) > 0 {
		var ls []string
		for i, l := range f.Locations {
			if i == n {
				break
			}
			ls = append(ls, fmt.Sprintf("%s %s:%d", l.Location, l.Reason, l.Packets))
		}
		fmt.Fprintf(w, "(where, node-wide: %s)\n", strings.Join(ls, ", "))
	}
	return nil
}

func dropWorkload(r *top.DropRow) string {
	return tcpWorkload(&top.TCPRow{Workload: r.Workload, WorkloadKind: r.WorkloadKind})
}

// dropReasons is "REASON:packets" for the first n reasons.
func dropReasons(rs []top.DropReason, n int) string {
	if len(rs) == 0 {
		return "-"
	}
	parts := make([]string, 0, min(n, len(rs))+1)
	for i, r := range rs {
		if i == n {
			parts = append(parts, "...")
			break
		}
		parts = append(parts, r.Reason+":"+strconv.FormatUint(r.Packets, 10))
	}
	return strings.Join(parts, ",")
}
