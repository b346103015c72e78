package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/yaml"

	"github.com/isoobs/isoobs/plugin/cluster"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

const statusExample = `  # Every node's isoobs daemon: probes attached, counting since, map fill, lost events
  kubectl isoobs status

  # As JSON, two nodes only
  kubectl isoobs status --node worker-1,worker-2 -o json`

// LostCounters are the daemon Status counters that mean DNS events were not
// counted or not attributed (full kernel maps, evictions, untracked pods).
var LostCounters = []string{
	"probe_pod_map_full", "probe_name_table_full", "probe_inflight_evicted",
	"untracked_pod_queries", "untracked_name_queries", "read_errors",
}

// DaemonStatus is one node's row of `kubectl isoobs status`; its JSON/YAML
// field names are the -o json|yaml schema.
type DaemonStatus struct {
	Node string `json:"node"`
	Pod  string `json:"pod,omitempty"`
	// Error says why the daemon could not be asked (then only Node and Pod are set).
	Error               string            `json:"error,omitempty"`
	Version             string            `json:"version,omitempty"`
	Kernel              string            `json:"kernel,omitempty"`
	CgroupRoot          string            `json:"cgroupRoot,omitempty"`
	CountingSince       *time.Time        `json:"countingSince,omitempty"`
	ProbesAttached      int               `json:"probesAttached"`
	Probes              []ProbeState      `json:"probes,omitempty"`
	Maps                []MapFill         `json:"maps,omitempty"`
	Lost                uint64            `json:"lost"`
	PodsKnown           uint32            `json:"podsKnown"`
	KubernetesConnected bool              `json:"kubernetesConnected"`
	KubernetesError     string            `json:"kubernetesError,omitempty"`
	Counters            map[string]uint64 `json:"counters,omitempty"`
	Hubble              *HubbleState      `json:"hubble,omitempty"`
}

// HubbleState is the daemon's Hubble subscription, as `hubble status` would judge it.
type HubbleState struct {
	Enabled        bool    `json:"enabled"`
	Server         string  `json:"server,omitempty"`
	Connected      bool    `json:"connected"`
	Error          string  `json:"error,omitempty"`
	FlowsPerSecond float64 `json:"flowsPerSecond"`
	LostEvents     uint64  `json:"lostEvents"`
	SkippedFlows   uint64  `json:"skippedFlows"`
}

// ProbeState is one eBPF program of a daemon.
type ProbeState struct {
	Name     string `json:"name"`
	Hook     string `json:"hook"`
	Target   string `json:"target,omitempty"`
	Attached bool   `json:"attached"`
	Error    string `json:"error,omitempty"`
}

// MapFill is how full one of a daemon's maps is.
type MapFill struct {
	Name       string  `json:"name"`
	Entries    uint64  `json:"entries"`
	MaxEntries uint64  `json:"maxEntries"`
	Percent    float64 `json:"percent"`
}

// StatusReport is what `kubectl isoobs status -o json|yaml` prints.
type StatusReport struct {
	Daemons []DaemonStatus `json:"daemons"`
}

// StatusOptions holds the flags of `kubectl isoobs status`.
type StatusOptions struct {
	ConfigFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	Output          string
	Nodes           []string
	DaemonNamespace string
	DaemonSelector  string
	DaemonPort      int
	ConnectTimeout  time.Duration
}

// NewCmdStatus returns `kubectl isoobs status`.
func NewCmdStatus(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &StatusOptions{ConfigFlags: configFlags, IOStreams: streams, DaemonNamespace: cluster.DefaultNamespace,
		DaemonSelector: cluster.DefaultSelector, DaemonPort: cluster.DefaultPort, ConnectTimeout: cluster.DefaultConnectTimeout}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every node's isoobs daemon: probes, counting since, map fill, lost events",
		Long: `Ask the isoobs daemon on every node (through the API server's port-forward,
like top) for its status: how many eBPF probes are attached, since when it
counts, how full its maps are, how many events it lost, and whether it
resolves pods through the Kubernetes API. Nodes whose daemon cannot be
reached are listed with the reason.

` + versionSkewHelp,
		Example:      statusExample,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(c.Context())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.Output, "output", "o", o.Output, "Output format: json or yaml (default: a table)")
	addClusterFlags(f, &o.Nodes, &o.DaemonNamespace, &o.DaemonSelector, &o.DaemonPort, &o.ConnectTimeout)
	return cmd
}

// Validate checks the flags.
func (o *StatusOptions) Validate() error {
	switch o.Output = strings.ToLower(strings.TrimSpace(o.Output)); o.Output {
	case "", "json", "yaml", "wide":
	default:
		return fmt.Errorf("invalid -o %q: valid formats are json, yaml, wide (or leave -o out for the table)", o.Output)
	}
	return validateClusterFlags(true, o.Nodes, o.DaemonSelector, o.DaemonPort, o.ConnectTimeout)
}

// Run asks every daemon for its Status and prints one row per node.
func (o *StatusOptions) Run(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	opts := cluster.Options{Namespace: o.DaemonNamespace, Selector: o.DaemonSelector, Port: o.DaemonPort, Nodes: o.Nodes, ConnectTimeout: o.ConnectTimeout}
	conns, missing, err := connectCluster(ctx, o.ConfigFlags, opts)
	if err != nil && len(missing) == 0 {
		return err
	}
	defer conns.Close()
	report := StatusReport{Daemons: make([]DaemonStatus, 0, len(conns)+len(missing))}
	for _, m := range missing {
		report.Daemons = append(report.Daemons, DaemonStatus{Node: m.Node, Error: m.Reason})
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, cluster.DefaultConcurrency)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			sctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
			defer cancel()
			resp, err := isoobsv1.NewDaemonClient(c.GRPC).Status(sctx, &isoobsv1.StatusRequest{})
			st := DaemonStatus{Node: c.Pod.Node}
			if err != nil {
				st.Error = fmt.Sprintf("Status: %v", err)
			} else {
				st = daemonStatus(c.Pod.Node, resp)
			}
			st.Pod = c.Pod.String()
			mu.Lock()
			report.Daemons = append(report.Daemons, st)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(report.Daemons, func(i, j int) bool { return report.Daemons[i].Node < report.Daemons[j].Node })
	if err := printStatus(o.Out, report, o.Output); err != nil {
		return err
	}
	if w := statusVersionSkew(report); w != "" {
		fmt.Fprintln(o.ErrOut, "warning: "+w)
	}
	if len(conns) == 0 {
		return err // every node missing: the reasons are printed, and the command fails
	}
	return nil
}

func daemonStatus(node string, r *isoobsv1.StatusResponse) DaemonStatus {
	st := DaemonStatus{Node: node, Version: r.GetVersion(), Kernel: r.GetKernel(), CgroupRoot: r.GetCgroupRoot(),
		PodsKnown: r.GetPodsKnown(), KubernetesConnected: r.GetKubernetesConnected(), KubernetesError: r.GetKubernetesError(),
		Counters: r.GetCounters()}
	if r.GetNode() != "" {
		st.Node = r.GetNode()
	}
	if ts := r.GetCountingSince(); ts != nil {
		t := ts.AsTime()
		st.CountingSince = &t
	}
	for _, p := range r.GetProbes() {
		st.Probes = append(st.Probes, ProbeState{Name: p.GetName(), Hook: p.GetHook(), Target: p.GetTarget(), Attached: p.GetAttached(), Error: p.GetError()})
		if p.GetAttached() {
			st.ProbesAttached++
		}
	}
	for _, m := range r.GetMaps() {
		fill := MapFill{Name: m.GetName(), Entries: m.GetEntries(), MaxEntries: m.GetMaxEntries()}
		if fill.MaxEntries > 0 {
			fill.Percent = 100 * float64(fill.Entries) / float64(fill.MaxEntries)
		}
		st.Maps = append(st.Maps, fill)
	}
	for _, name := range LostCounters {
		st.Lost += r.GetCounters()[name]
	}
	if h := r.GetHubble(); h != nil {
		st.Hubble = &HubbleState{Enabled: h.GetEnabled(), Server: h.GetServer(), Connected: h.GetConnected(),
			Error: h.GetError(), FlowsPerSecond: h.GetFlowsPerSecond(), LostEvents: h.GetLostEvents()}
		for _, n := range h.GetSkippedFlows() {
			st.Hubble.SkippedFlows += n
		}
	}
	return st
}

// hubbleColumn is one word a column wide: the probes work without Hubble, so
// a missing Hubble is information, not a failure.
func hubbleColumn(h *HubbleState) string {
	switch {
	case h == nil || !h.Enabled:
		return "off"
	case h.Connected:
		return fmt.Sprintf("%.0f flows/s", h.FlowsPerSecond)
	default:
		return "down"
	}
}

func printStatus(w io.Writer, report StatusReport, output string) error {
	switch output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(report)
	case "yaml":
		b, err := yaml.Marshal(report)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	tw := printers.GetNewTabWriter(w)
	header := "NODE\tPOD\tPROBES\tCOUNTING-SINCE\tMAP-FILL\tLOST\tPODS\tKUBERNETES\tHUBBLE\tSTATUS"
	if output == "wide" {
		header += "\tVERSION\tKERNEL\tCGROUP-ROOT"
	}
	fmt.Fprintln(tw, header)
	for _, d := range report.Daemons {
		if d.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\tmissing: %s", d.Node, orNone(d.Pod), d.Error)
			if output == "wide" {
				fmt.Fprint(tw, "\t-\t-\t-")
			}
			fmt.Fprintln(tw)
			continue
		}
		since := "-"
		if d.CountingSince != nil {
			since = duration.HumanDuration(time.Since(*d.CountingSince)) + " ago"
		}
		fullest := "-"
		var top MapFill
		for _, m := range d.Maps {
			if m.Percent >= top.Percent {
				top = m
			}
		}
		if top.Name != "" {
			fullest = fmt.Sprintf("%.0f%% %s", top.Percent, top.Name)
		}
		kube := "connected"
		if !d.KubernetesConnected {
			kube = "no"
			if d.KubernetesError != "" {
				kube = "error"
			}
		}
		status := "ok"
		switch {
		case d.ProbesAttached < len(d.Probes):
			status = "probes detached"
		case d.KubernetesError != "":
			status = "kubernetes: " + d.KubernetesError
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\t%d\t%d\t%s\t%s\t%s", d.Node, orNone(d.Pod), d.ProbesAttached, len(d.Probes), since, fullest, d.Lost, d.PodsKnown, kube, hubbleColumn(d.Hubble), status)
		if output == "wide" {
			fmt.Fprintf(tw, "\t%s\t%s\t%s", d.Version, d.Kernel, d.CgroupRoot)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
