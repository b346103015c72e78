package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/isoobs/isoobs/plugin/cluster"
	"github.com/isoobs/isoobs/plugin/printers"
	"github.com/isoobs/isoobs/plugin/top"
	"github.com/isoobs/isoobs/plugin/tui"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

const topDNSExample = `  # Cluster-wide live view: every node's isoobs daemon, reached through the API server
  kubectl isoobs top dns

  # Count DNS over the next 3 seconds on all nodes, as JSON
  kubectl isoobs top dns -A --duration 3s -o json

  # Only two nodes
  kubectl isoobs top dns --node worker-1,worker-2

  # Live view from one node's daemon (a local socket or a port-forward)
  kubectl isoobs top dns --daemon unix:///run/isoobs/isoobs.sock
  kubectl isoobs top dns --daemon 127.0.0.1:7070

  # Run the daemon's probes in this process on this host (needs root)
  sudo kubectl isoobs top dns --local

  # Count DNS over the next 10 seconds, print one table, exit
  kubectl isoobs top dns --daemon 127.0.0.1:7070 --duration 10s

  # Which workloads get the most NXDOMAIN answers, as JSON for jq
  kubectl isoobs top dns --daemon 127.0.0.1:7070 --once --group-by workload --sort nxdomain -o json

  # Only the crawler pods in tenant-jobs, with their top 5 query names
  kubectl isoobs top dns --daemon 127.0.0.1:7070 -n tenant-jobs -l app=crawler --top-names 5 -o wide

  # Which DNS server answers slowly or with SERVFAIL: one row per server, client and server side
  kubectl isoobs top dns -A --group-by server

  # Only the pods that sent queries to one CoreDNS replica, with where their queries went
  kubectl isoobs top dns -A --server kube-system/coredns-5d78c9869d-x2xkq -o wide

  # Who asks for names under jobs-app.example (counted on every node, from now on)
  kubectl isoobs top dns -A --zone jobs-app.example

  # Only names matching an RE2 expression (case-insensitive, unanchored), by workload
  kubectl isoobs top dns -A --name '^api[0-9]*\.' --group-by workload

  # The flood stopped before you arrived: the last 15 minutes from the daemons' history,
  # with when each pod's queries started and ended (firstSeen/lastSeen in JSON)
  kubectl isoobs top dns -A --since 15m --once

  # The crawler's individual queries and answers as they happen (1 in 16 of its queries),
  # with the container that sent each, the answer's rcode and latency, and the server
  kubectl isoobs top dns -n tenant-jobs --pod crawler-7d9f-x2k --trace --trace-sample 16`

// hostOS is runtime.GOOS (a variable so tests can play another OS).
var hostOS = runtime.GOOS

// TopDNSOptions holds the flags of `kubectl isoobs top dns` and what
// Complete derives from them.
type TopDNSOptions struct {
	ConfigFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	DaemonAddrs   []string
	Local         bool
	CgroupRoot    string
	NodeName      string
	Once          bool
	Duration      time.Duration
	Interval      time.Duration
	Sort          string
	Limit         int
	GroupBy       string
	Server        string
	AllNamespaces bool
	Selector      string
	Pod           string
	TopNames      int
	// NameRegex and Zone (--name, --zone) filter query names on the daemons.
	NameRegex string
	Zone      string
	// Since (--since) looks back over the daemons' history.
	Since time.Duration
	// Trace (--trace) streams --pod's individual messages, 1 in TraceSample of its queries.
	Trace       bool
	TraceSample int
	Output      string
	NoHeaders   bool
	// Hubble: --source, and --hubble-server with --local.
	Hubble HubbleOptions

	// Cluster mode (neither --daemon nor --local): which daemon pods, how long each gets.
	Cluster cluster.Options

	// Set by Complete.
	namespace     string
	groupBy       isoobsv1.GroupBy
	namespaceFlag bool
	// includeUnresolved asks for rows without a pod (--local without names).
	includeUnresolved bool
	isTerminal        func(io.Writer) bool
	openSources       func(ctx context.Context) ([]top.Source, func(), error)
	localEngine       LocalEngine
	firstFrameWait    time.Duration
	// missing are nodes the cluster fan-out could not reach (set by the sources).
	missing []top.MissingNode
	// noKubeconfigLocal, when set, is what --local without a usable kubeconfig loses (top http:
	// its rows come from Hubble, with pod names); default: the probes' pod names.
	noKubeconfigLocal string
}

// NewTopDNSOptions returns options with the flag defaults.
func NewTopDNSOptions(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *TopDNSOptions {
	return &TopDNSOptions{
		ConfigFlags:    configFlags,
		IOStreams:      streams,
		Interval:       time.Second,
		Sort:           top.SortQPS,
		Limit:          20,
		GroupBy:        top.GroupByPod,
		TopNames:       3,
		TraceSample:    1,
		Cluster:        defaultClusterOptions(),
		isTerminal:     stdoutIsTerminal,
		localEngine:    defaultLocalEngine,
		firstFrameWait: 15 * time.Second,
	}
}

// NewCmdTopDNS returns `kubectl isoobs top dns`.
func NewCmdTopDNS(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewTopDNSOptions(configFlags, streams)
	cmd := &cobra.Command{
		Use:   "dns [flags]",
		Short: "Live per-pod DNS query rates, errors, latency and top names",
		Long: `Show which pods send the most DNS queries, how they are answered (NOERROR,
NXDOMAIN, SERVFAIL, REFUSED, malformed), their latency (p50/p99) and their most
asked names, counted by the isoobs daemon's eBPF probes. It needs no Cilium L7
DNS policy.

--name REGEX and --zone DOMAIN keep only matching query names, on the daemons
(other names never leave the node): rows then count exactly the queries for
matching names since the view started, with their NXDOMAIN answers, rates and
top names; responses, other rcodes and latency are per pod, not per name, and
stay empty. --since 1m|5m|15m shows the daemons' history instead (up to their
--retention, 15m by default): counts and average rates over that past window,
so a flood that already stopped is still seen, with when each row's queries
started and ended (FIRST-SEEN/LAST-SEEN).

Which server answered: -o wide adds SERVERS, where each row's queries went
(server, share, mean latency, SERVFAILs). --group-by server shows one row per
server: its clients, their queries, share, NXDOMAIN/SERVFAIL/unanswered and
mean latency as they saw it, and for a DNS server pod (CoreDNS) what it
answered itself and how long it took (SRV- columns, server-side). A server is
the address the pod sent to: the kube-dns Service IP where kube-proxy
translates after the pod (then the replicas are rows of their own, with their
served counts), the CoreDNS replica's IP where Cilium's socket load balancer
translates before. --server IP|namespace/pod keeps the rows that used it.

By default it asks the isoobs daemon on every node (the pods labelled
--daemon-selector in --daemon-namespace), each through the API server's
port-forward with your kubeconfig, and merges them; --node picks nodes. Nodes
that do not answer are listed as missing (missingNodes in JSON) and the rest
is shown. --daemon ADDR reads daemons at given addresses instead, and --local
runs the daemon's engine in this process. Counters cover the time since the
daemon started; --duration D counts only the next D.

On a terminal the view refreshes every --interval (keys: s cycles the sort,
n/f/e/l/r/c/m/a pick one, / filters the rows shown, g/G switch the grouping,
Esc backs out of a filter or grouping, q quits; its second line says which
nodes answer, which are missing or stale, and the window). Otherwise each frame is printed as a table
(-o wide for more columns), as one JSON object per line (-o json) or as a YAML
document (-o yaml). All namespaces are shown unless -n narrows them.

Before the first frame each daemon is asked its version once (not with
--local). ` + versionSkewHelp,
		Example:      topDNSExample,
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
	f.StringSliceVar(&o.DaemonAddrs, "daemon", o.DaemonAddrs, "Read isoobs daemons at host:port or unix:///path/to.sock (repeat or comma-separate to merge several nodes)")
	f.BoolVar(&o.Local, "local", o.Local, "Run the daemon engine in this process on this host (root, or CAP_BPF+CAP_PERFMON+CAP_NET_ADMIN)")
	f.StringVar(&o.CgroupRoot, "cgroup-root", o.CgroupRoot, "With --local: cgroup v2 mount to watch (default: detected)")
	f.StringVar(&o.NodeName, "node-name", o.NodeName, "With --local: name of this node in the output (default: the host name)")
	f.BoolVar(&o.Once, "once", o.Once, "Print the first frame (counts since the daemon started) and exit")
	f.DurationVar(&o.Duration, "duration", o.Duration, "Count over this long from now, print one frame and exit (e.g. 10s)")
	f.DurationVar(&o.Interval, "interval", o.Interval, "Refresh interval")
	f.StringVar(&o.Sort, "sort", o.Sort, "Sort by: "+strings.Join(top.SortKeys, "|"))
	f.IntVar(&o.Limit, "limit", o.Limit, "Show at most this many rows (0: all)")
	f.StringVar(&o.GroupBy, "group-by", o.GroupBy, "Group rows by: "+strings.Join(top.GroupBys, "|")+" (server: one row per DNS server, with its clients' view and, for a server pod, its own served counts and latency)")
	f.StringVar(&o.Server, "server", "", "Show only rows that sent queries to this DNS server: an IP, IP:port, or a server pod (namespace/pod or pod)")
	f.BoolVarP(&o.AllNamespaces, "all-namespaces", "A", o.AllNamespaces, "Show all namespaces (the default unless -n is given)")
	f.StringVarP(&o.Selector, "selector", "l", o.Selector, "Only pods matching this label selector, e.g. app=crawler,tier!=web")
	f.StringVar(&o.Pod, "pod", o.Pod, "Only this pod (name, or namespace/name)")
	f.IntVar(&o.TopNames, "top-names", o.TopNames, "Query names to show per row (0: none)")
	f.StringVar(&o.NameRegex, "name", o.NameRegex, "Only query names matching this RE2 expression (case-insensitive, unanchored: '^api\\.' for names starting api.), applied on the daemons, counted from now")
	f.StringVar(&o.Zone, "zone", o.Zone, "Only query names in this domain: the name itself and every name under it (e.g. example.com), applied on the daemons, counted from now")
	f.DurationVar(&o.Since, "since", o.Since, "Look back over the daemons' history: counts and average rates over the last 1m, 5m or 15m (at most their --retention), with first/last seen per row")
	f.BoolVar(&o.Trace, "trace", o.Trace, "Stream --pod's individual DNS messages (time, container, qtype, name, rcode, answers, latency, server) instead of counts")
	f.IntVar(&o.TraceSample, "trace-sample", o.TraceSample, "With --trace: 1 in this many of the pod's queries, with their answers (a power of two; the node traces nothing for other pods)")
	printers.TableOutputs.AddFlag(cmd, &o.Output)
	printers.AddNoHeadersFlag(cmd, &o.NoHeaders)
	addClusterFlags(f, &o.Cluster)
	addHubbleFlags(f, &o.Hubble)
	_ = cmd.RegisterFlagCompletionFunc("sort", cobra.FixedCompletions(top.SortKeys, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("group-by", cobra.FixedCompletions(top.GroupBys, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("source", cobra.FixedCompletions(Sources, cobra.ShellCompDirectiveNoFileComp))
	groupFlags(cmd,
		flagGroup{"Which rows (and -n from the global flags)", []string{"all-namespaces", "selector", "pod", "source", "name", "zone", "server"}},
		flagGroup{"How they are counted and shown", []string{"group-by", "sort", "limit", "top-names", "once", "duration", "since", "interval"}},
		flagGroup{"Output", []string{"output", "no-headers"}},
		flagGroup{"One pod's messages", []string{"trace", "trace-sample"}},
		flagGroup{"Every node's daemon (the default)", []string{"node", "daemon-namespace", "daemon-selector", "daemon-port", "connect-timeout"}},
		flagGroup{"One daemon at an address (--daemon)", []string{"daemon"}},
		flagGroup{"In this process on this host (--local)", []string{"local", "cgroup-root", "node-name", "hubble-server", "hubble-tls", "hubble-tls-ca-cert",
			"hubble-tls-client-cert", "hubble-tls-client-key", "hubble-tls-server-name", "hubble-tls-insecure"}},
	)
	return cmd
}

// Complete normalizes flags and fills derived fields.
func (o *TopDNSOptions) Complete(cmd *cobra.Command, _ []string) error {
	if o.ConfigFlags != nil && o.ConfigFlags.Namespace != nil && *o.ConfigFlags.Namespace != "" {
		o.namespace = *o.ConfigFlags.Namespace
		o.namespaceFlag = true
	}
	if ns, name, ok := strings.Cut(o.Pod, "/"); ok {
		if o.namespaceFlag && ns != o.namespace {
			return fmt.Errorf("--pod %s names namespace %q but -n is %q: drop one of them", o.Pod, ns, o.namespace)
		}
		o.namespace, o.namespaceFlag, o.Pod = ns, true, name
	}
	return nil
}

// Validate checks the flags together; each error says what to run instead.
func (o *TopDNSOptions) Validate() error {
	var err error
	if o.Sort, err = top.ParseSort(o.Sort); err != nil {
		return err
	}
	if o.GroupBy, o.groupBy, err = top.ParseGroupBy(o.GroupBy); err != nil {
		return err
	}
	if o.Output, err = printers.TableOutputs.Parse(o.Output); err != nil {
		return err
	}
	if len(o.DaemonAddrs) > 0 && o.Local {
		return errors.New("--daemon and --local both choose where the data comes from: use --daemon ADDR to read a running daemon, or --local to run the probes here")
	}
	if o.Local && hostOS != "linux" {
		// Said before any kubeconfig probing: the release ships this binary for macOS and Windows too.
		return fmt.Errorf("--local runs the eBPF probes in this process and needs a Linux host (this is %s): drop --local to read every node's daemon through the API server, or read one with --daemon ADDR", hostOS)
	}
	for _, addr := range o.DaemonAddrs {
		if _, err := top.DaemonTarget(addr); err != nil {
			return err
		}
	}
	if !o.Local {
		for name, value := range map[string]string{"cgroup-root": o.CgroupRoot, "node-name": o.NodeName} {
			if value != "" {
				return fmt.Errorf("--%s only applies with --local (the daemon at --daemon has its own); add --local or drop --%s", name, name)
			}
		}
	}
	if err := validateClusterFlags(len(o.DaemonAddrs) == 0 && !o.Local, o.Cluster); err != nil {
		return err
	}
	if o.Once && o.Duration != 0 {
		return errors.New("--once and --duration both print one frame: use --once for counts since the daemon started, or --duration 10s for counts over the next 10 seconds")
	}
	if o.Duration < 0 {
		return fmt.Errorf("--duration %s is negative: give how long to count, e.g. --duration 10s", o.Duration)
	}
	if o.Interval <= 0 {
		return fmt.Errorf("--interval %s must be positive, e.g. --interval 2s", o.Interval)
	}
	if o.Interval < 100*time.Millisecond {
		return fmt.Errorf("--interval %s is too short: use 100ms or more", o.Interval)
	}
	if o.Duration > 0 && o.Duration < 100*time.Millisecond {
		return fmt.Errorf("--duration %s is too short: use 100ms or more", o.Duration)
	}
	if o.Limit < 0 {
		return fmt.Errorf("--limit %d is negative: use --limit 0 to show all rows", o.Limit)
	}
	if o.TopNames < 0 {
		return fmt.Errorf("--top-names %d is negative: use --top-names 0 to hide query names", o.TopNames)
	}
	if o.namespaceFlag && o.AllNamespaces {
		return fmt.Errorf("-n %s and -A conflict: drop -A to see namespace %s, or drop -n to see all namespaces", o.namespace, o.namespace)
	}
	if err := o.validateScope(); err != nil {
		return err
	}
	if err := o.validateTrace(); err != nil {
		return err
	}
	if err := o.validateServer(); err != nil {
		return err
	}
	if o.Selector != "" {
		if _, err := labels.Parse(o.Selector); err != nil {
			return fmt.Errorf("invalid -l %q: %v (example: -l app=crawler,tier!=web)", o.Selector, err)
		}
	}
	return o.Hubble.validate(o.Local)
}

// Request is the TopRequest sent to every daemon. The daemons return all
// rows; sort and limit are applied after the merge so that several nodes
// merge exactly and the live view can re-sort without asking again.
func (o *TopDNSOptions) Request() *isoobsv1.TopRequest {
	req := &isoobsv1.TopRequest{
		Dimension:         isoobsv1.Dimension_DIMENSION_DNS,
		GroupBy:           o.groupBy,
		LabelSelector:     o.Selector,
		Pod:               o.Pod,
		Sort:              o.Sort,
		Interval:          durationpb.New(o.Interval),
		TopNames:          uint32(o.TopNames),
		IncludeUnresolved: o.includeUnresolved,
		Source:            o.Hubble.source,
	}
	if !o.AllNamespaces {
		req.Namespace = o.namespace
	}
	if o.Duration > 0 {
		// One frame exactly D after the stream opens, counted from then.
		req.SinceStreamStart = true
		req.Interval = durationpb.New(o.Duration)
	}
	req.NameRegex, req.Zone = o.NameRegex, o.Zone
	if o.Since > 0 {
		req.Since = durationpb.New(o.Since)
	}
	return req
}

// Run streams frames from the chosen daemon(s) to the chosen output.
func (o *TopDNSOptions) Run(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	open := o.openSources
	if open == nil {
		open = o.defaultSources
	}
	sources, closeSources, err := open(ctx)
	if err != nil {
		return err
	}
	defer closeSources()

	if o.Trace {
		return o.runTrace(ctx, sources)
	}
	opts := top.StreamOptions{
		Request: o.Request(),
		Merge:   top.MergeOptions{GroupBy: o.GroupBy, TopNames: o.TopNames, Server: o.Server},
		Missing: o.missing,
	}
	if !o.Local { // --local runs this binary's own engine: one version
		if w := sourcesVersionSkew(ctx, sources, o.Cluster.ConnectTimeout); w != "" {
			opts.Warnings = append(opts.Warnings, w)
		}
	}
	if o.Once || o.Duration > 0 {
		// The one frame printed waits for every node that answers (up to --connect-timeout after
		// the first), so a node whose frame is a moment late is not left out of the counts.
		opts.MaxWait = max(o.Interval, o.Cluster.ConnectTimeout)
	}
	live := !o.Once && o.Duration == 0 && (o.Output == printers.OutputTable || o.Output == printers.OutputWide) && o.isTerminal(o.Out)
	if live {
		return o.runLive(ctx, sources, opts)
	}
	return o.runPlain(ctx, sources, opts)
}

// runPlain prints frames until interrupted, or the one frame of --once or
// --duration.
func (o *TopDNSOptions) runPlain(ctx context.Context, sources []top.Source, opts top.StreamOptions) error {
	printer := printers.NewWithOptions(o.Output, o.NoHeaders)
	single := o.Once || o.Duration > 0
	streamCtx := ctx
	wait := o.firstFrameWait + o.Interval + o.Duration
	if single {
		// A daemon that never answers must not hang a scripted call.
		var cancel context.CancelFunc
		streamCtx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	started := time.Now()
	warned := map[string]bool{}
	printed := false
	err := top.Stream(streamCtx, sources, opts, func(f top.Frame) error {
		if o.Duration > 0 && !frameCoversDuration(f.Since, f.Time, started, o.Duration) {
			return nil
		}
		for _, w := range f.Warnings {
			if !warned[w] {
				warned[w] = true
				fmt.Fprintln(o.ErrOut, "warning: "+w)
			}
		}
		if err := printer.PrintFrame(f.SortedLimited(o.Sort, o.Limit), o.Out); err != nil {
			return err
		}
		printed = true
		if single {
			return top.ErrStop
		}
		return nil
	})
	switch {
	case ctx.Err() != nil:
		return nil // interrupted by the user
	case single && !printed && (errors.Is(streamCtx.Err(), context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded):
		// gRPC may report the deadline (server side) before our timer fires.
		return fmt.Errorf("no frame from the isoobs daemon within %s: check that it is running and counting (its Status, its logs), or try without --once/--duration", wait)
	case err == nil && single && !printed:
		return errors.New("the isoobs daemon closed the stream before sending a frame: check its logs")
	case err == nil && !single:
		fmt.Fprintln(o.ErrOut, "the isoobs daemon closed the stream")
	}
	return err
}

// runLive shows the bubbletea view until the user quits or the stream fails.
func (o *TopDNSOptions) runLive(ctx context.Context, sources []top.Source, opts top.StreamOptions) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	title := "isoobs top dns @ " + sourceNames(sources)
	model := tui.NewModel(title, o.Sort, o.Limit, o.Output == printers.OutputWide)
	regroup := make(chan string, 1)
	model.Group, model.Groups, model.Regroup = o.GroupBy, liveGroups(o.Since > 0, o.NameRegex != "" || o.Zone != ""), func(g string) { regroup <- g }
	drill := make(chan [2]string, 1)
	model.Drill = func(namespace, pod string) { drill <- [2]string{namespace, pod} }
	prog := tea.NewProgram(model, tea.WithContext(ctx), tea.WithInput(o.In), tea.WithOutput(o.Out), tea.WithAltScreen())

	go streamLive(ctx, prog, sources, opts, regroup)
	go o.traceLive(ctx, prog, sources, drill)

	final, err := prog.Run()
	cancel()
	if err != nil && !errors.Is(err, tea.ErrProgramKilled) && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("live view: %w", err)
	}
	if m, ok := final.(tui.Model); ok && m.Err() != nil {
		return m.Err()
	}
	return nil
}

func sourceNames(sources []top.Source) string {
	names := make([]string, len(sources))
	for i, s := range sources {
		names[i] = s.Name
	}
	return strings.Join(names, ",")
}

func stdoutIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}

// defaultSources opens the daemons chosen by --daemon, the in-process one of
// --local, or else every node's daemon pod.
func (o *TopDNSOptions) defaultSources(ctx context.Context) ([]top.Source, func(), error) {
	if o.Local {
		return o.startLocal(ctx)
	}
	if len(o.DaemonAddrs) == 0 {
		sources, missing, closeAll, err := clusterSources(ctx, o.ConfigFlags, o.Cluster, o.ErrOut)
		o.missing = missing
		return sources, closeAll, err
	}
	var sources []top.Source
	var conns []*grpc.ClientConn
	closeAll := func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}
	dialOpts, err := o.Cluster.DialOptions()
	if err != nil {
		return nil, nil, err
	}
	for _, addr := range o.DaemonAddrs {
		conn, err := top.DialDaemon(addr, dialOpts...)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		conns = append(conns, conn)
		sources = append(sources, top.Source{Name: addr, Client: isoobsv1.NewDaemonClient(conn)})
	}
	return sources, closeAll, nil
}
