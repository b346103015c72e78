package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/yaml"

	"github.com/isoobs/isoobs/plugin/printers"
	"github.com/isoobs/isoobs/plugin/top"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

const topHTTPExample = `  # Which services answer slowly or with errors? Live, every node, from Hubble's L7 flows
  kubectl isoobs top http -A

  # Per Service over the next 10 seconds, most 5xx first, as JSON
  kubectl isoobs top http --duration 10s --group-by service --sort errors -o json

  # Who sends the requests (clients) in one namespace, with every path template
  kubectl isoobs top http -n tenant-jobs --clients -o wide

  # The errors stopped before you arrived: the last 15 minutes from the daemons' history,
  # with when each row's requests started and ended (firstSeen/lastSeen in JSON)
  kubectl isoobs top http -A --since 15m --sort errors --once`

// TopHTTPOptions holds the flags of `kubectl isoobs top http`. Where the frames come from
// (--daemon, --local, every node's daemon) works as for top dns, through the same options.
type TopHTTPOptions struct {
	src *TopDNSOptions

	Sort    string
	GroupBy string
	// Clients: rows are the pods that sent the requests (default: those that served them).
	Clients bool
	// Paths is how many path templates the table shows per row (-o wide: all kept).
	Paths int
	// checkL7 reports the namespaces' L7 HTTP visibility and the Services of pods (tests
	// replace it).
	checkL7 func(ctx context.Context) l7Info
}

// NewCmdTopHTTP returns `kubectl isoobs top http`.
func NewCmdTopHTTP(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &TopHTTPOptions{src: NewTopDNSOptions(configFlags, streams), Sort: top.HTTPSortRequests, GroupBy: top.GroupByPod, Paths: 3}
	o.src.noKubeconfigLocal = noKubeconfigHTTP
	cmd := &cobra.Command{
		Use:   "http [flags]",
		Short: "Live HTTP golden signals per pod, workload or Service from Hubble's L7 flows",
		Long: `Show HTTP golden signals — requests/s, 4xx and 5xx, latency p50/p95/p99 and the
busiest method + path templates — per pod (or --group-by workload|service|
namespace|node), from the L7 HTTP flows Cilium's proxy reports to Hubble, read by
the isoobs daemon on every node and merged across nodes exactly (counters and
latency histograms add; a request both an egress and an ingress proxy logged
counts once).

Rows are the pods that served the requests (--clients: those that sent them).
Status codes and latency come from the proxy's response records. Paths are
templated ({id}, {uuid}, {hex}; no query strings) and bounded: at most 32 per
row, the rest counted under "other".

Hubble has HTTP flows only for pods a CiliumNetworkPolicy with http rules selects:
the view says which namespaces in view have none (or only some) such pods.

Rates are per second over the interval; counters cover the time since the
daemon started, or the next --duration D. --since 1m|5m|15m shows the daemons'
history instead (up to their --retention, 15m by default): requests, 4xx, 5xx,
latency and paths over that past window, rates as its average, and when each
row's requests started and ended (FIRST-SEEN/LAST-SEEN).

On a terminal the table is redrawn every --interval; otherwise each frame is
printed as a table (-o wide for more columns), one JSON object per line (-o
json, every field in docs/top-http-json.md) or a YAML document.`,
		Example:      topHTTPExample,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(c *cobra.Command, args []string) error {
			if err := o.src.Complete(c, args); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(c.Context())
		},
	}
	s := o.src
	f := cmd.Flags()
	f.StringSliceVar(&s.DaemonAddrs, "daemon", s.DaemonAddrs, "Read isoobs daemons at host:port or unix:///path/to.sock (repeat or comma-separate to merge several nodes)")
	f.BoolVar(&s.Local, "local", s.Local, "Run the daemon engine in this process on this host (root); it reads Hubble at --hubble-server")
	f.StringVar(&s.CgroupRoot, "cgroup-root", s.CgroupRoot, "With --local: cgroup v2 mount to watch (default: detected)")
	f.StringVar(&s.NodeName, "node-name", s.NodeName, "With --local: name of this node in the output (default: the host name)")
	s.Hubble.Hubble.AddFlags(f, "With --local: ")
	f.BoolVar(&s.Once, "once", s.Once, "Print the first frame (counts since the daemon started) and exit")
	f.DurationVar(&s.Duration, "duration", s.Duration, "Count over this long from now, print one frame and exit (e.g. 10s)")
	f.DurationVar(&s.Interval, "interval", s.Interval, "Refresh interval")
	f.DurationVar(&s.Since, "since", s.Since, "Look back over the daemons' history: counts and average rates over the last 1m, 5m or 15m (at most their --retention), with first/last seen per row")
	f.StringVar(&o.Sort, "sort", o.Sort, "Sort by: "+strings.Join(top.HTTPSortKeys, "|"))
	f.IntVar(&s.Limit, "limit", s.Limit, "Show at most this many rows (0: all)")
	f.StringVar(&o.GroupBy, "group-by", o.GroupBy, "Group rows by: "+strings.Join(top.HTTPGroupBys, "|"))
	f.BoolVar(&o.Clients, "clients", o.Clients, "Rows are the pods that sent the requests, not those that served them")
	f.IntVar(&o.Paths, "paths", o.Paths, "Path templates shown per row in the table (-o wide and JSON: all kept, at most 32 and \"other\")")
	f.BoolVarP(&s.AllNamespaces, "all-namespaces", "A", s.AllNamespaces, "Show all namespaces (the default unless -n is given)")
	f.StringVarP(&s.Selector, "selector", "l", s.Selector, "Only pods matching this label selector, e.g. app=coreapi")
	f.StringVar(&s.Pod, "pod", s.Pod, "Only this pod (name, or namespace/name)")
	printers.TableOutputs.AddFlag(cmd, &s.Output)
	printers.AddNoHeadersFlag(cmd, &s.NoHeaders)
	addClusterFlags(f, &s.Cluster)
	_ = cmd.RegisterFlagCompletionFunc("sort", cobra.FixedCompletions(top.HTTPSortKeys, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("group-by", cobra.FixedCompletions(top.HTTPGroupBys, cobra.ShellCompDirectiveNoFileComp))
	groupFlags(cmd,
		flagGroup{"Which rows (and -n from the global flags)", []string{"all-namespaces", "selector", "pod", "clients"}},
		flagGroup{"How they are counted and shown", []string{"group-by", "sort", "limit", "paths", "once", "duration", "since", "interval"}},
		flagGroup{"Output", []string{"output", "no-headers"}},
		flagGroup{"Every node's daemon (the default)", []string{"node", "daemon-namespace", "daemon-selector", "daemon-port", "connect-timeout", "token-file"}},
		flagGroup{"One daemon at an address (--daemon)", []string{"daemon"}},
		flagGroup{"In this process on this host (--local)", []string{"local", "cgroup-root", "node-name", "hubble-server", "hubble-tls", "hubble-tls-ca-cert",
			"hubble-tls-client-cert", "hubble-tls-client-key", "hubble-tls-server-name", "hubble-tls-insecure"}},
	)
	return cmd
}

// Validate checks the flags together; each error says what to run instead.
func (o *TopHTTPOptions) Validate() error {
	var err error
	if o.Sort, err = top.ParseHTTPSort(o.Sort); err != nil {
		return err
	}
	if o.GroupBy, err = top.ParseHTTPGroupBy(o.GroupBy); err != nil {
		return err
	}
	if o.Paths < 0 {
		return fmt.Errorf("--paths %d: use 0 or more (0 hides the column)", o.Paths)
	}
	if o.src.Hubble.Given() && !o.src.Local {
		return errors.New("--hubble-server and --hubble-tls-* only apply with --local (a running daemon has its own --hubble-server); add --local or drop them")
	}
	if o.src.Local && o.src.Hubble.Disabled() {
		return errors.New("top http reads Hubble's L7 flows: --hubble-server off leaves it nothing; drop it")
	}
	// --since alone (negative, too short, with --duration) is checked with top dns's words in
	// o.src.Validate; how far back the history goes is known here only for --local (the
	// daemons say theirs, see Run).
	if o.src.Local && o.src.Since > localRetention {
		return fmt.Errorf("--since %s is beyond the history --local keeps (%s, the daemon's default --retention): look back %s or less, e.g. --since 15m", o.src.Since, localRetention, localRetention)
	}
	return o.src.Validate()
}

// noKubeconfigHTTP is what top http --local misses without a kubeconfig: its rows are Hubble's,
// pod names included, but nothing says which namespaces have no L7 visibility.
const noKubeconfigHTTP = "pods are named from Hubble's flows, but which namespaces lack L7 HTTP visibility is not checked and Services are only those Hubble names; pass --kubeconfig for them"

// localRetention is the history the --local engine keeps: daemon.Config's default Retention.
const localRetention = 15 * time.Minute

// Request is the TopRequest sent to every daemon: per-pod rows, grouped, sorted and cut after
// the merge.
func (o *TopHTTPOptions) Request() *isoobsv1.TopRequest {
	s := o.src
	req := &isoobsv1.TopRequest{
		Dimension:     isoobsv1.Dimension_DIMENSION_HTTP,
		GroupBy:       isoobsv1.GroupBy_GROUP_BY_POD,
		LabelSelector: s.Selector,
		Pod:           s.Pod,
		Interval:      durationpb.New(s.Interval),
		HttpClients:   o.Clients,
	}
	if !s.AllNamespaces {
		req.Namespace = s.namespace
	}
	if s.Duration > 0 {
		req.SinceStreamStart = true
		req.Interval = durationpb.New(s.Duration)
	}
	if s.Since > 0 {
		req.Since = durationpb.New(s.Since)
	}
	return req
}

// Run streams merged HTTP frames to the chosen output.
func (o *TopHTTPOptions) Run(ctx context.Context) error {
	s := o.src
	v, err := s.startView(ctx, o.Request())
	if err != nil {
		return err
	}
	defer v.close()
	check := o.checkL7
	if check == nil {
		check = o.defaultCheckL7
	}
	l7 := check(v.ctx)
	v.opts.Warnings = append(v.opts.Warnings, l7.warnings...)
	err = v.print(o.Sort, func(ctx context.Context, emit func(shownFrame) error) error {
		return top.StreamHTTP(ctx, v.sources, v.opts, o.GroupBy, o.Clients, l7.services, func(f top.HTTPFrame) error {
			f = f.SortedLimited(o.Sort, s.Limit)
			f.L7Visibility = l7.visibility
			f.LookBackSeconds = s.Since.Seconds()
			title := "http (" + f.Side + " side)"
			if s.Since > 0 {
				title = "http (" + f.Side + " side, the last " + s.Since.String() + " from history)"
			}
			return emit(shownFrame{since: f.Since, at: f.Time, warnings: f.Warnings, title: title,
				print: func(w io.Writer, docs *int) error { return printHTTPFrame(w, f, s.Output, s.NoHeaders, o.Paths, docs) }})
		})
	})
	switch {
	case status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "Hubble"):
		return fmt.Errorf("%w (kubectl isoobs status shows the daemon's Hubble connection)", err)
	case status.Code(err) == codes.InvalidArgument && strings.Contains(err.Error(), "since") && strings.Contains(err.Error(), "longer than the history"):
		return fmt.Errorf("--since %s is beyond the history a daemon keeps: %s; look back at most its --retention, e.g. --since 15m", s.Since, status.Convert(err).Message())
	case status.Code(err) == codes.InvalidArgument && strings.Contains(err.Error(), "since") && s.Since > 0:
		return fmt.Errorf("%w (this daemon predates top http --since: upgrade it with kubectl isoobs install --components isoobs)", err)
	case status.Code(err) == codes.InvalidArgument && strings.Contains(err.Error(), "dimension"):
		return fmt.Errorf("%w (this daemon predates top http: upgrade it with kubectl isoobs install --components isoobs)", err)
	}
	return err
}

// printHTTPFrame writes one frame as a table (wide or not), one JSON line, or a YAML document.
func printHTTPFrame(w io.Writer, f top.HTTPFrame, output string, noHeaders bool, paths int, yamlDocs *int) error {
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
	if err := printers.WriteColumns(w, httpLookBackColumns(f, printers.HTTPColumns(f.GroupBy, wide, paths)), f.Rows, noHeaders); err != nil {
		return err
	}
	if f.Truncated > 0 {
		fmt.Fprintf(w, "(%d more rows; --limit 0 shows all)\n", f.Truncated)
	}
	if len(f.Rows) == 0 {
		fmt.Fprintln(w, "(no HTTP requests in Hubble's L7 flows yet: only pods a CiliumNetworkPolicy with http rules selects have them)")
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

// httpLookBackColumns fits a --since frame: FIRST-SEEN and LAST-SEEN (when each row's requests
// started and ended within the look-back) before TOP-PATHS.
func httpLookBackColumns(f top.HTTPFrame, cols []printers.Column[top.HTTPRow]) []printers.Column[top.HTTPRow] {
	if f.LookBackSeconds == 0 {
		return cols
	}
	seen := []printers.Column[top.HTTPRow]{
		{Header: "FIRST-SEEN", Value: func(r *top.HTTPRow) string { return printers.SeenClock(r.FirstSeen) }},
		{Header: "LAST-SEEN", Value: func(r *top.HTTPRow) string { return printers.SeenClock(r.LastSeen) }},
	}
	out := make([]printers.Column[top.HTTPRow], 0, len(cols)+len(seen))
	placed := false
	for _, c := range cols {
		if c.Header == "TOP-PATHS" {
			out, placed = append(out, seen...), true
		}
		out = append(out, c)
	}
	if !placed {
		out = append(out, seen...)
	}
	return out
}

// l7Warnings turns the namespaces' visibility into what the view says.
func l7Warnings(vis []top.L7Namespace) []string {
	var out []string
	const maxNamed = 10
	var none []string
	for _, n := range vis {
		switch {
		case n.Pods == 0:
		case n.VisiblePods == 0:
			none = append(none, n.Namespace)
		case n.VisiblePods < n.Pods:
			out = append(out, fmt.Sprintf("namespace %s: %d of %d pods are under an L7 HTTP policy (%s); requests of %s are not seen",
				n.Namespace, n.VisiblePods, n.Pods, strings.Join(n.Policies, ", "), strings.Join(n.UnseenGroups, ", ")))
		}
	}
	for i, ns := range none {
		if i == maxNamed {
			out = append(out, fmt.Sprintf("%d more namespaces have no L7 HTTP visibility", len(none)-maxNamed))
			break
		}
		out = append(out, fmt.Sprintf("namespace %s has no L7 HTTP visibility: no CiliumNetworkPolicy with http rules selects its pods, so Hubble has no HTTP flows there "+
			"(a policy with ingress toPorts rules.http [{}] on the servers makes them visible)", ns))
	}
	return out
}
