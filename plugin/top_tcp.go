package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/isoobs/isoobs/plugin/printers"
	"github.com/isoobs/isoobs/plugin/top"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

const topTCPExample = `  # Which pods' connections are failing, resetting or retransmitting? Live, every node
  kubectl isoobs top tcp -A

  # Count over the next 5 seconds, by workload, heaviest retransmitters first, as JSON
  kubectl isoobs top tcp --duration 5s --group-by workload --sort retrans -o json

  # Which peers do the crawler's connections fail or reset against?
  kubectl isoobs top tcp -n tenant-jobs -l app=crawler --group-by peer --duration 5s

  # One node's daemon, or the probes in this process (root)
  kubectl isoobs top tcp --daemon unix:///run/isoobs/isoobs.sock
  sudo kubectl isoobs top tcp --local --duration 10s -o wide`

// TopTCPOptions holds the flags of `kubectl isoobs top tcp`. Where the frames come from
// (--daemon, --local, every node's daemon) works as for top dns, through the same options.
type TopTCPOptions struct {
	// src opens the sources and carries the shared flags (namespace, selector, cluster, ...).
	src *TopDNSOptions

	Sort    string
	GroupBy string
	groupBy isoobsv1.GroupBy
	// drops: the `top drops` view (DIMENSION_DROPS) instead of TCP.
	drops bool
	// peerNames names peer IPs (pods, Services, nodes); set in cluster mode from the cluster's
	// pods and Services, or by tests.
	peerNames top.PeerNames
	// Source is top drops' --source (all, ebpf, hubble).
	Source string
	source isoobsv1.Source
}

// NewCmdTopTCP returns `kubectl isoobs top tcp`.
func NewCmdTopTCP(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &TopTCPOptions{src: NewTopDNSOptions(configFlags, streams), Sort: top.TCPSortErrors, GroupBy: top.GroupByPod}
	cmd := &cobra.Command{
		Use:   "tcp [flags]",
		Short: "Live per-pod TCP connections, connect failures, resets, retransmits, bytes and RTT",
		Long: `Show which pods' TCP connections fail, reset or retransmit, counted by the isoobs
daemon's eBPF TCP probe on every node (cgroup_skb at the cgroup root,
TCP tracepoints; every event attributed to the socket's pod, never to a host
process), merged across nodes exactly.

Per row: connections opened (active: connect, passive: accepted), connect
failures (refused by a RST, timed out, other), RSTs sent and received,
retransmitted segments (and their share of segments sent), new payload bytes
out and in (each byte once; retransmits apart), the smoothed RTT p50/p99, and
the top peers: the addresses the pod connected to (ip:port) or that connected
to it (<-ip), named as pod/, service/ or node/ from the cluster, each with its
share of the row's count under --sort (failures and resets for errors,
retransmits for retrans, connect attempts otherwise). --group-by peer makes a
row of each peer: connections, failures, resets and retransmits of the pods
selected with it (bytes and RTT are per pod only).
Rates are per second over the interval; counters cover the time since the
daemon started, or the next --duration D.

Where the rows come from works as for top dns: every node's daemon through the
API server (default), --daemon ADDR, or --local. On a terminal the table is
redrawn every --interval; otherwise each frame is printed as a table (-o wide
for more columns), one JSON object per line (-o json) or a YAML document.`,
		Example:      topTCPExample,
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
	addTopTCPFlags(cmd, o, top.TCPSortKeys)
	return cmd
}

// addTopTCPFlags adds the flags of top tcp and top drops (sortKeys differ).
func addTopTCPFlags(cmd *cobra.Command, o *TopTCPOptions, sortKeys []string) {
	s := o.src
	f := cmd.Flags()
	f.StringSliceVar(&s.DaemonAddrs, "daemon", s.DaemonAddrs, "Read isoobs daemons at host:port or unix:///path/to.sock (repeat or comma-separate to merge several nodes)")
	f.BoolVar(&s.Local, "local", s.Local, "Run the daemon engine in this process on this host (root, or CAP_BPF+CAP_PERFMON+CAP_NET_ADMIN)")
	f.StringVar(&s.CgroupRoot, "cgroup-root", s.CgroupRoot, "With --local: cgroup v2 mount to watch (default: detected)")
	f.StringVar(&s.NodeName, "node-name", s.NodeName, "With --local: name of this node in the output (default: the host name)")
	f.BoolVar(&s.Once, "once", s.Once, "Print the first frame (counts since the daemon started) and exit")
	f.DurationVar(&s.Duration, "duration", s.Duration, "Count over this long from now, print one frame and exit (e.g. 10s)")
	f.DurationVar(&s.Interval, "interval", s.Interval, "Refresh interval")
	f.StringVar(&o.Sort, "sort", o.Sort, "Sort by: "+strings.Join(sortKeys, "|"))
	f.IntVar(&s.Limit, "limit", s.Limit, "Show at most this many rows (0: all)")
	f.StringVar(&o.GroupBy, "group-by", o.GroupBy, "Group rows by: "+strings.Join(top.TCPGroupBys, "|"))
	f.BoolVarP(&s.AllNamespaces, "all-namespaces", "A", s.AllNamespaces, "Show all namespaces (the default unless -n is given)")
	f.StringVarP(&s.Selector, "selector", "l", s.Selector, "Only pods matching this label selector, e.g. app=crawler,tier!=web")
	f.StringVar(&s.Pod, "pod", s.Pod, "Only this pod (name, or namespace/name)")
	printers.TableOutputs.AddFlag(cmd, &s.Output)
	printers.AddNoHeadersFlag(cmd, &s.NoHeaders)
	addClusterFlags(f, &s.Cluster)
	_ = cmd.RegisterFlagCompletionFunc("sort", cobra.FixedCompletions(sortKeys, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("group-by", cobra.FixedCompletions(top.TCPGroupBys, cobra.ShellCompDirectiveNoFileComp))
	groupFlags(cmd,
		flagGroup{"Which rows (and -n from the global flags)", []string{"all-namespaces", "selector", "pod"}},
		flagGroup{"How they are counted and shown", []string{"group-by", "sort", "limit", "once", "duration", "interval"}},
		flagGroup{"Output", []string{"output", "no-headers"}},
		flagGroup{"Every node's daemon (the default)", []string{"node", "daemon-namespace", "daemon-selector", "daemon-port", "connect-timeout"}},
		flagGroup{"One daemon at an address (--daemon)", []string{"daemon"}},
		flagGroup{"In this process on this host (--local)", []string{"local", "cgroup-root", "node-name"}},
	)
}

// Complete normalizes flags (-n, --pod ns/name) as top dns does.
func (o *TopTCPOptions) Complete(cmd *cobra.Command, args []string) error {
	return o.src.Complete(cmd, args)
}

// Validate checks the flags together; each error says what to run instead.
func (o *TopTCPOptions) Validate() error {
	var err error
	parseSort := top.ParseTCPSort
	if o.drops {
		parseSort = top.ParseDropSort
	}
	if o.Sort, err = parseSort(o.Sort); err != nil {
		return err
	}
	if o.GroupBy, o.groupBy, err = top.ParseTCPGroupBy(o.GroupBy); err != nil {
		return err
	}
	if o.drops && o.groupBy == isoobsv1.GroupBy_GROUP_BY_PEER {
		return errors.New("--group-by peer is top tcp's: top drops groups by pod, workload, namespace or node")
	}
	if o.drops {
		switch strings.ToLower(strings.TrimSpace(o.Source)) {
		case "", "all":
			o.source = isoobsv1.Source_SOURCE_ALL
		case "ebpf":
			o.source = isoobsv1.Source_SOURCE_EBPF
		case "hubble":
			o.source = isoobsv1.Source_SOURCE_HUBBLE
		default:
			return fmt.Errorf("invalid --source %q: use %s", o.Source, strings.Join(Sources, ", "))
		}
	}
	// The shared checks (outputs, --daemon/--local, durations, -n/-A, -l, cluster flags);
	// the DNS sort and grouping it also checks are left at their valid defaults.
	return o.src.Validate()
}

// Request is the TopRequest sent to every daemon: all rows, sorted and cut after the merge.
func (o *TopTCPOptions) Request() *isoobsv1.TopRequest {
	s := o.src
	req := &isoobsv1.TopRequest{
		Dimension:         isoobsv1.Dimension_DIMENSION_TCP,
		GroupBy:           o.groupBy,
		LabelSelector:     s.Selector,
		Pod:               s.Pod,
		Sort:              o.Sort,
		Interval:          durationpb.New(s.Interval),
		IncludeUnresolved: s.includeUnresolved,
	}
	if o.drops {
		req.Dimension = isoobsv1.Dimension_DIMENSION_DROPS
		req.Source = o.source
	}
	if !s.AllNamespaces {
		req.Namespace = s.namespace
	}
	if s.Duration > 0 {
		req.SinceStreamStart = true
		req.Interval = durationpb.New(s.Duration)
	}
	return req
}

// Run streams merged TCP frames to the chosen output.
func (o *TopTCPOptions) Run(ctx context.Context) error {
	s := o.src
	v, err := s.startView(ctx, o.Request())
	if err != nil {
		return err
	}
	defer v.close()
	if o.peerNames == nil && !o.drops && !s.Local && len(s.DaemonAddrs) == 0 && s.openSources == nil {
		if w := o.startClusterPeerNames(v.ctx); w != "" {
			v.opts.Warnings = append(v.opts.Warnings, w)
		}
	}
	stream := func(ctx context.Context, emit func(shownFrame) error) error {
		return top.StreamTCP(ctx, v.sources, v.opts, o.GroupBy, func(f top.TCPFrame) error {
			f = f.SortedLimited(o.Sort, s.Limit).Named(o.peerNames)
			return emit(shownFrame{since: f.Since, at: f.Time, warnings: f.Warnings, title: "tcp",
				print: func(w io.Writer, docs *int) error { return printTCPFrame(w, f, s.Output, s.NoHeaders, docs) }})
		})
	}
	if o.drops {
		stream = func(ctx context.Context, emit func(shownFrame) error) error {
			return top.StreamDrops(ctx, v.sources, v.opts, o.GroupBy, func(f top.DropFrame) error {
				f = f.SortedLimited(o.Sort, s.Limit)
				return emit(shownFrame{since: f.Since, at: f.Time, warnings: f.Warnings, title: "drops",
					print: func(w io.Writer, docs *int) error { return printDropFrame(w, f, s.Output, s.NoHeaders, docs) }})
			})
		}
	}
	err = v.print(o.Sort, stream)
	if status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "TCP probe") {
		return fmt.Errorf("%w (kubectl isoobs status shows the probe's error; an older daemon serves top dns only)", err)
	}
	return err
}

// startClusterPeerNames sets o.peerNames from the cluster's pods and Services; a failure is a
// warning (peers are then shown by IP).
func (o *TopTCPOptions) startClusterPeerNames(ctx context.Context) string {
	if o.src.ConfigFlags == nil {
		return "peers are shown by IP: no kubeconfig flags to name them"
	}
	cfg, err := o.src.ConfigFlags.ToRESTConfig()
	if err != nil {
		return "peers are shown by IP: no Kubernetes client to name them: " + err.Error()
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "peers are shown by IP: " + err.Error()
	}
	names, err := startPeerNames(ctx, client, o.src.Cluster.ConnectTimeout)
	if err != nil {
		return "peers are shown by IP: " + err.Error()
	}
	o.peerNames = names.Lookup
	return ""
}

// printTCPFrame writes one frame as a table (wide or not), one JSON line, or a YAML document.
func printTCPFrame(w io.Writer, f top.TCPFrame, output string, noHeaders bool, yamlDocs *int) error {
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
	if err := printers.WriteColumns(w, tcpColumns(f.GroupBy, output == printers.OutputWide), f.Rows, noHeaders); err != nil {
		return err
	}
	if f.Truncated > 0 {
		fmt.Fprintf(w, "(%d more rows; --limit 0 shows all)\n", f.Truncated)
	}
	if len(f.Rows) == 0 {
		fmt.Fprintln(w, "(no TCP activity in pods yet)")
	}
	if len(f.MissingNodes) > 0 {
		names := make([]string, len(f.MissingNodes))
		for i, m := range f.MissingNodes {
			names[i] = m.Node
		}
		fmt.Fprintf(w, "(missing nodes: %s)\n", strings.Join(names, ", "))
	}
	return nil
}

func tcpColumns(groupBy string, wide bool) []printers.Column[top.TCPRow] {
	if groupBy == top.GroupByPeer {
		return tcpPeerColumns(wide)
	}
	var cols []printers.Column[top.TCPRow]
	switch groupBy {
	case top.GroupByNamespace:
		cols = append(cols, tcpCol("NAMESPACE", func(r *top.TCPRow) string { return tcpDash(r.Namespace) }), tcpCol("PODS", func(r *top.TCPRow) string { return tcpU(uint64(r.Pods)) }))
	case top.GroupByNode:
		cols = append(cols, tcpCol("NODE", func(r *top.TCPRow) string { return tcpDash(r.Node) }), tcpCol("PODS", func(r *top.TCPRow) string { return tcpU(uint64(r.Pods)) }))
	case top.GroupByWorkload:
		cols = append(cols, tcpCol("NAMESPACE", func(r *top.TCPRow) string { return tcpDash(r.Namespace) }),
			tcpCol("WORKLOAD", func(r *top.TCPRow) string { return tcpWorkload(r) }), tcpCol("PODS", func(r *top.TCPRow) string { return tcpU(uint64(r.Pods)) }))
	default:
		cols = append(cols, tcpCol("NAMESPACE", func(r *top.TCPRow) string { return tcpDash(r.Namespace) }),
			tcpCol("POD", func(r *top.TCPRow) string { return tcpDash(tcpFirst(r.Pod, r.PodUID, r.Cgroup)) }),
			tcpCol("WORKLOAD", func(r *top.TCPRow) string { return tcpWorkload(r) }),
			tcpCol("NODE", func(r *top.TCPRow) string { return tcpDash(r.Node) }))
	}
	cols = append(cols,
		tcpCol("OPENS/S", func(r *top.TCPRow) string { return tcpF1(r.OpensPerSecond) }),
		tcpCol("FAIL/S", func(r *top.TCPRow) string { return tcpF1(r.ConnectFailuresPerSecond) }),
		tcpCol("REFUSED", func(r *top.TCPRow) string { return tcpU(r.ConnectRefused) }),
		tcpCol("TIMEOUT", func(r *top.TCPRow) string { return tcpU(r.ConnectTimeouts) }),
		tcpCol("RST-OUT", func(r *top.TCPRow) string { return tcpU(r.ResetsSent) }),
		tcpCol("RST-IN", func(r *top.TCPRow) string { return tcpU(r.ResetsReceived) }),
		tcpCol("RETRANS/S", func(r *top.TCPRow) string { return tcpF1(r.RetransPerSecond) }),
		tcpCol("RETRANS%", func(r *top.TCPRow) string { return strconv.FormatFloat(r.RetransPercent(), 'f', 2, 64) }),
		tcpCol("OUT/S", func(r *top.TCPRow) string { return tcpBytesRate(r.BytesOutPerSecond) }),
		tcpCol("IN/S", func(r *top.TCPRow) string { return tcpBytesRate(r.BytesInPerSecond) }),
		tcpCol("RTT-P50", func(r *top.TCPRow) string { return tcpRTT(r.RTTP50Ms) }),
		tcpCol("RTT-P99", func(r *top.TCPRow) string { return tcpRTT(r.RTTP99Ms) }),
		tcpCol("TOP-PEERS", func(r *top.TCPRow) string { return tcpTopPeers(r, tableTopPeers) }),
	)
	if wide {
		cols = append(cols,
			tcpCol("ACTIVE", func(r *top.TCPRow) string { return tcpU(r.ActiveOpens) }),
			tcpCol("PASSIVE", func(r *top.TCPRow) string { return tcpU(r.PassiveOpens) }),
			tcpCol("FAIL-OTHER", func(r *top.TCPRow) string { return tcpU(r.ConnectOther) }),
			tcpCol("RETRANS", func(r *top.TCPRow) string { return tcpU(r.RetransSegs) }),
			tcpCol("BYTES-OUT", func(r *top.TCPRow) string { return tcpU(r.BytesOut) }),
			tcpCol("BYTES-IN", func(r *top.TCPRow) string { return tcpU(r.BytesIn) }),
			tcpCol("SEGS-OUT", func(r *top.TCPRow) string { return tcpU(r.SegsOut) }),
			tcpCol("SEGS-IN", func(r *top.TCPRow) string { return tcpU(r.SegsIn) }),
		)
		if groupBy == top.GroupByPod {
			cols = append(cols, tcpCol("POD-UID", func(r *top.TCPRow) string { return tcpDash(r.PodUID) }))
		}
	}
	return cols
}

// tableTopPeers is how many peers a table row names (JSON carries every peer a row has).
const tableTopPeers = 3

// tcpTopPeers is "peer share%,..." for a row's first n peers, "+N" when it has more.
func tcpTopPeers(r *top.TCPRow, n int) string {
	if len(r.TopPeers) == 0 {
		return "-"
	}
	var parts []string
	for i := range r.TopPeers {
		if i == n {
			break
		}
		p := &r.TopPeers[i]
		parts = append(parts, p.DisplayName()+" "+strconv.FormatFloat(p.Share, 'f', 0, 64)+"%")
	}
	s := strings.Join(parts, ",")
	if more := len(r.TopPeers) - len(parts) + int(r.OtherPeers); more > 0 {
		s += ",+" + strconv.Itoa(more)
	}
	return s
}

// tcpPeerColumns are the columns of --group-by peer: what the pods selected did with each peer.
func tcpPeerColumns(wide bool) []printers.Column[top.TCPRow] {
	peer := func(r *top.TCPRow) *top.TCPPeer {
		if r.Peer == nil {
			return &top.TCPPeer{}
		}
		return r.Peer
	}
	cols := []printers.Column[top.TCPRow]{
		tcpCol("PEER", func(r *top.TCPRow) string { return tcpDash(peer(r).DisplayName()) }),
		tcpCol("ADDRESS", func(r *top.TCPRow) string { return tcpDash(peer(r).Address()) }),
		tcpCol("PODS", func(r *top.TCPRow) string { return tcpU(uint64(r.Pods)) }),
		tcpCol("OPENS", func(r *top.TCPRow) string { return tcpU(peer(r).Opens) }),
		tcpCol("REFUSED", func(r *top.TCPRow) string { return tcpU(peer(r).ConnectRefused) }),
		tcpCol("TIMEOUT", func(r *top.TCPRow) string { return tcpU(peer(r).ConnectTimeouts) }),
		tcpCol("RST-OUT", func(r *top.TCPRow) string { return tcpU(peer(r).ResetsSent) }),
		tcpCol("RST-IN", func(r *top.TCPRow) string { return tcpU(peer(r).ResetsReceived) }),
		tcpCol("RETRANS", func(r *top.TCPRow) string { return tcpU(peer(r).RetransSegs) }),
	}
	if wide {
		cols = append(cols,
			tcpCol("FAIL-OTHER", func(r *top.TCPRow) string { return tcpU(peer(r).ConnectOther) }),
			tcpCol("NODE", func(r *top.TCPRow) string { return tcpDash(r.Node) }))
	}
	return cols
}

func tcpCol(header string, value func(r *top.TCPRow) string) printers.Column[top.TCPRow] {
	return printers.Column[top.TCPRow]{Header: header, Value: value}
}

func tcpWorkload(r *top.TCPRow) string {
	if r.Workload == "" {
		return "-"
	}
	if r.WorkloadKind == "" {
		return r.Workload
	}
	return strings.ToLower(r.WorkloadKind) + "/" + r.Workload
}

func tcpDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func tcpFirst(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

func tcpU(v uint64) string   { return strconv.FormatUint(v, 10) }
func tcpF1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
func tcpRTT(ms float64) string {
	if ms == 0 {
		return "-"
	}
	return strconv.FormatFloat(ms, 'f', 2, 64) + "ms"
}

// bytesRate is a byte rate in IEC units (B/s, KiB/s, MiB/s, GiB/s).
func tcpBytesRate(v float64) string {
	units := []string{"B", "KiB", "MiB", "GiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + units[i]
}
