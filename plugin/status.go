package plugin

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/isoobs/isoobs/plugin/cluster"
	"github.com/isoobs/isoobs/plugin/printers"
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

	Output    string
	NoHeaders bool
	// Cluster finds and reaches the daemon pods (--node, --daemon-namespace, ...).
	Cluster cluster.Options
}

// NewStatusOptions returns options with the flag defaults.
func NewStatusOptions(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *StatusOptions {
	return &StatusOptions{ConfigFlags: configFlags, IOStreams: streams, Cluster: defaultClusterOptions()}
}

// NewCmdStatus returns `kubectl isoobs status`.
func NewCmdStatus(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewStatusOptions(configFlags, streams)
	cmd := &cobra.Command{
		Use:   "status [flags]",
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
	printers.TableOutputs.AddFlag(cmd, &o.Output)
	printers.AddNoHeadersFlag(cmd, &o.NoHeaders)
	addClusterFlags(cmd.Flags(), &o.Cluster)
	return cmd
}

// Complete normalizes -o.
func (o *StatusOptions) Complete(_ *cobra.Command, _ []string) error {
	var err error
	o.Output, err = printers.TableOutputs.Parse(o.Output)
	return err
}

// Validate checks the flags together; each error says what to run instead.
func (o *StatusOptions) Validate() error {
	return validateClusterFlags(true, o.Cluster)
}

// Run asks every daemon for its Status and prints one row per node.
func (o *StatusOptions) Run(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	conns, missing, err := connectCluster(ctx, o.ConfigFlags, o.Cluster)
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
			sctx, cancel := context.WithTimeout(ctx, o.Cluster.ConnectTimeout)
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
	if err := report.Print(o.Out, o.Output, o.NoHeaders); err != nil {
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

// Print writes the report as -o asks: JSON or YAML (the StatusReport schema), or a table of
// statusColumns, one row per node.
func (r StatusReport) Print(w io.Writer, output string, noHeaders bool) error {
	if output == printers.OutputJSON || output == printers.OutputYAML {
		return printers.WriteObject(w, output, r)
	}
	return printers.WriteColumns(w, statusColumns(output == printers.OutputWide), r.Daemons, noHeaders)
}

// statusColumns are the status table's columns; a daemon that could not be asked shows "-"
// everywhere but NODE, POD and STATUS ("missing: why").
func statusColumns(wide bool) []printers.Column[DaemonStatus] {
	type col = printers.Column[DaemonStatus]
	// asked shows value for a daemon that answered, "-" for a missing one.
	asked := func(header string, value func(d *DaemonStatus) string) col {
		return col{Header: header, Value: func(d *DaemonStatus) string {
			if d.Error != "" {
				return "-"
			}
			return value(d)
		}}
	}
	cols := []col{
		{Header: "NODE", Value: func(d *DaemonStatus) string { return d.Node }},
		{Header: "POD", Value: func(d *DaemonStatus) string { return orNone(d.Pod) }},
		asked("PROBES", func(d *DaemonStatus) string { return fmt.Sprintf("%d/%d", d.ProbesAttached, len(d.Probes)) }),
		asked("COUNTING-SINCE", func(d *DaemonStatus) string {
			if d.CountingSince == nil {
				return "-"
			}
			return duration.HumanDuration(time.Since(*d.CountingSince)) + " ago"
		}),
		asked("MAP-FILL", func(d *DaemonStatus) string {
			var fullest MapFill
			for _, m := range d.Maps {
				if m.Percent >= fullest.Percent {
					fullest = m
				}
			}
			if fullest.Name == "" {
				return "-"
			}
			return fmt.Sprintf("%.0f%% %s", fullest.Percent, fullest.Name)
		}),
		asked("LOST", func(d *DaemonStatus) string { return strconv.FormatUint(d.Lost, 10) }),
		asked("PODS", func(d *DaemonStatus) string { return strconv.FormatUint(uint64(d.PodsKnown), 10) }),
		asked("KUBERNETES", func(d *DaemonStatus) string {
			switch {
			case d.KubernetesConnected:
				return "connected"
			case d.KubernetesError != "":
				return "error"
			}
			return "no"
		}),
		asked("HUBBLE", func(d *DaemonStatus) string { return hubbleColumn(d.Hubble) }),
		{Header: "STATUS", Value: func(d *DaemonStatus) string {
			switch {
			case d.Error != "":
				return "missing: " + d.Error
			case d.ProbesAttached < len(d.Probes):
				return "probes detached"
			case d.KubernetesError != "":
				return "kubernetes: " + d.KubernetesError
			}
			return "ok"
		}},
	}
	if wide {
		cols = append(cols,
			asked("VERSION", func(d *DaemonStatus) string { return d.Version }),
			asked("KERNEL", func(d *DaemonStatus) string { return d.Kernel }),
			asked("CGROUP-ROOT", func(d *DaemonStatus) string { return d.CgroupRoot }),
		)
	}
	return cols
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
