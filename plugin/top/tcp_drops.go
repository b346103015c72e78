package top

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// Sort keys of `top drops`, the default first.
var DropSortKeys = []string{"packets", "bytes", TCPSortName}

// ParseDropSort checks a `top drops --sort` value.
func ParseDropSort(s string) (string, error) {
	key := strings.ToLower(strings.TrimSpace(s))
	if slices.Contains(DropSortKeys, key) {
		return key, nil
	}
	return "", fmt.Errorf("invalid --sort %q: valid keys are %s (e.g. --sort bytes)", s, strings.Join(DropSortKeys, ", "))
}

// DropFrame is one merged view of the packets the kernel dropped, printed by every output
// format of `top drops` (a stable JSON/YAML schema like TCPFrame's).
type DropFrame struct {
	Time            time.Time     `json:"time"`
	Since           time.Time     `json:"since"`
	IntervalSeconds float64       `json:"intervalSeconds"`
	Nodes           []string      `json:"nodes"`
	MissingNodes    []MissingNode `json:"missingNodes"`
	StaleNodes      []StaleNode   `json:"staleNodes"`
	GroupBy         string        `json:"groupBy"`
	Sort            string        `json:"sort"`
	Rows            []DropRow     `json:"rows"`
	// Total covers every row, including rows cut by --limit.
	Total DropRow `json:"total"`
	// NoSocket are drops of packets that had no socket (most receive-side drops before the
	// socket lookup) and were sent to no pod's address on their node (the node's, which
	// hostNetwork pods report as theirs; one two pods claim; none): no pod's, summed over the
	// nodes. Those to a pod's address
	// are in its row.
	NoSocket DropRow `json:"noSocket"`
	// Locations are where the kernel dropped packets (the function that freed them, per
	// reason), summed over the nodes: every drop the probes count, the host's included (they
	// are the node's, not one pod's). At most 10, most packets first.
	Locations []DropLocation `json:"locations"`
	Truncated int            `json:"truncated"`
	Warnings  []string       `json:"warnings"`
}

// DropRow is what the kernel dropped of one group's packets (a pod's sockets', sent or
// received), by reason.
type DropRow struct {
	Node             string            `json:"node"`
	Namespace        string            `json:"namespace"`
	Pod              string            `json:"pod"`
	PodUID           string            `json:"podUID"`
	Workload         string            `json:"workload"`
	WorkloadKind     string            `json:"workloadKind"`
	Cgroup           string            `json:"cgroup"`
	Pods             uint32            `json:"pods"`
	Labels           map[string]string `json:"labels,omitempty"`
	Packets          uint64            `json:"packets"`
	Bytes            uint64            `json:"bytes"`
	PacketsPerSecond float64           `json:"packetsPerSecond"`
	// Reasons as the kernel names them (enum skb_drop_reason without SKB_DROP_REASON_).
	Reasons []DropReason `json:"reasons"`
	// Sources: ebpf (the kernel's drops above), hubble, or both.
	Sources []string `json:"sources"`
	// HubbleReasons are Hubble's drops of the row's pods by Hubble's reason (POLICY_DENIED,
	// ...): beside the kernel's, not added to Packets where the probe counted the pod too (the
	// kernel frees those packets as well, and the probe counts them, mostly without a socket);
	// a row Hubble alone reports has its Packets from here.
	HubbleReasons []DropReason `json:"hubbleReasons,omitempty"`
}

// DropLocation is the packets dropped in one kernel function for one reason.
type DropLocation struct {
	Location string `json:"location"`
	Reason   string `json:"reason"`
	Packets  uint64 `json:"packets"`
}

// maxDropLocations is how many locations a frame keeps (each daemon sends as many).
const maxDropLocations = 10

// DropReason is one reason's share of a row.
type DropReason struct {
	Reason  string `json:"reason"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

func dropRowFromProto(p *isoobsv1.DropRow) DropRow {
	if p == nil {
		return DropRow{}
	}
	r := DropRow{Node: p.Node, Namespace: p.Namespace, Pod: p.Pod, PodUID: p.PodUid, Workload: p.Workload, WorkloadKind: p.WorkloadKind,
		Cgroup: p.Cgroup, Pods: p.Pods, Labels: p.Labels, Packets: p.Packets, Bytes: p.Bytes, PacketsPerSecond: p.PacketsPerSecond}
	for _, x := range p.Reasons {
		r.Reasons = append(r.Reasons, DropReason{Reason: x.Reason, Packets: x.Packets, Bytes: x.Bytes})
	}
	for _, x := range p.HubbleReasons {
		r.HubbleReasons = append(r.HubbleReasons, DropReason{Reason: x.Reason, Packets: x.Packets, Bytes: x.Bytes})
	}
	r.Sources = append(r.Sources, p.Sources...)
	return r
}

// addDropReasons merges os into rs by reason, most packets first.
func addDropReasons(rs, os []DropReason) []DropReason {
	for _, x := range os {
		i := slices.IndexFunc(rs, func(y DropReason) bool { return y.Reason == x.Reason })
		if i < 0 {
			rs = append(rs, x)
			continue
		}
		rs[i].Packets += x.Packets
		rs[i].Bytes += x.Bytes
	}
	slices.SortFunc(rs, func(a, b DropReason) int {
		if c := cmp.Compare(b.Packets, a.Packets); c != 0 {
			return c
		}
		return strings.Compare(a.Reason, b.Reason)
	})
	return rs
}

func (r *DropRow) add(o *DropRow) {
	r.Pods += o.Pods
	r.Packets += o.Packets
	r.Bytes += o.Bytes
	r.PacketsPerSecond += o.PacketsPerSecond
	r.Reasons = addDropReasons(r.Reasons, o.Reasons)
	r.HubbleReasons = addDropReasons(r.HubbleReasons, o.HubbleReasons)
	for _, s := range o.Sources {
		if !slices.Contains(r.Sources, s) {
			r.Sources = append(r.Sources, s)
		}
	}
	slices.Sort(r.Sources)
	if r.Node != o.Node {
		r.Node = ""
	}
	if r.Pod != o.Pod || r.PodUID != o.PodUID {
		r.Pod, r.PodUID, r.Cgroup, r.Labels = "", "", "", nil
	}
	if r.Workload != o.Workload || r.WorkloadKind != o.WorkloadKind {
		r.Workload, r.WorkloadKind = "", ""
	}
}

// MergeDrops merges the latest drop frames of several daemons: rows of the same group add,
// reasons merged by name.
func MergeDrops(frames []*isoobsv1.TopFrame, groupBy string) DropFrame {
	out := DropFrame{GroupBy: groupBy, Rows: []DropRow{}}
	byKey := map[string]int{}
	var intervalSum float64
	first := true
	for _, f := range frames {
		if f == nil {
			continue
		}
		out.Nodes = append(out.Nodes, f.Node)
		if t := f.GetTime().AsTime(); f.Time != nil && t.After(out.Time) {
			out.Time = t
		}
		if s := f.GetSince().AsTime(); f.Since != nil && (out.Since.IsZero() || s.Before(out.Since)) {
			out.Since = s
		}
		intervalSum += f.GetInterval().AsDuration().Seconds()
		out.Truncated += int(f.Truncated)
		for _, w := range f.Warnings {
			out.Warnings = append(out.Warnings, f.Node+": "+w)
		}
		for _, p := range f.DropRows {
			r := dropRowFromProto(p)
			k := tcpMergeKey(groupBy, &TCPRow{Node: r.Node, Namespace: r.Namespace, Pod: r.Pod, PodUID: r.PodUID, Workload: r.Workload, WorkloadKind: r.WorkloadKind, Cgroup: r.Cgroup})
			if i, ok := byKey[k]; ok {
				out.Rows[i].add(&r)
				continue
			}
			byKey[k] = len(out.Rows)
			out.Rows = append(out.Rows, r)
		}
		for _, l := range f.DropLocations {
			i := slices.IndexFunc(out.Locations, func(o DropLocation) bool { return o.Location == l.Location && o.Reason == l.Reason })
			if i < 0 {
				out.Locations = append(out.Locations, DropLocation{Location: l.Location, Reason: l.Reason, Packets: l.Packets})
				continue
			}
			out.Locations[i].Packets += l.Packets
		}
		t, ns := dropRowFromProto(f.DropTotal), dropRowFromProto(f.DropNoSocket)
		if first {
			out.Total, out.NoSocket, first = t, ns, false
		} else {
			out.Total.add(&t)
			out.NoSocket.add(&ns)
		}
	}
	if len(out.Nodes) > 0 {
		out.IntervalSeconds = intervalSum / float64(len(out.Nodes))
	}
	slices.SortFunc(out.Locations, func(a, b DropLocation) int {
		if c := cmp.Compare(b.Packets, a.Packets); c != 0 {
			return c
		}
		return strings.Compare(a.Location+" "+a.Reason, b.Location+" "+b.Reason)
	})
	if len(out.Locations) > maxDropLocations {
		out.Locations = out.Locations[:maxDropLocations]
	}
	slices.Sort(out.Nodes)
	return out
}

// SortedLimited returns f with rows sorted by key (DropSortKeys) and cut to limit (0: all).
func (f DropFrame) SortedLimited(key string, limit int) DropFrame {
	name := func(r *DropRow) string {
		return (&TCPRow{Node: r.Node, Namespace: r.Namespace, Pod: r.Pod, Workload: r.Workload, Cgroup: r.Cgroup}).DisplayName(f.GroupBy) + "/" + r.Node
	}
	var values func(*DropRow) (float64, float64)
	switch key {
	case TCPSortName:
	case "bytes":
		values = func(r *DropRow) (float64, float64) { return float64(r.Bytes), 0 }
	default:
		values = func(r *DropRow) (float64, float64) { return r.PacketsPerSecond, float64(r.Packets) }
	}
	rows, cut := sortLimit(f.Rows, values, name, limit)
	f.Sort, f.Truncated = key, f.Truncated+cut
	f.Rows = rows
	return f
}

func (f *fanIn) mergeDrops(groupBy string) (DropFrame, bool) {
	frames, stale := f.latestFrames()
	if len(frames) == 0 {
		return DropFrame{}, false
	}
	frame := MergeDrops(frames, groupBy)
	frame.Warnings = append(frame.Warnings, f.mergeWarnings(stale)...)
	frame.MissingNodes = append(frame.MissingNodes, f.missing...)
	frame.StaleNodes = append(frame.StaleNodes, stale...)
	return frame, true
}

// StreamDrops is StreamTCP for `top drops` (DIMENSION_DROPS).
func StreamDrops(ctx context.Context, sources []Source, opts StreamOptions, groupBy string, emit func(DropFrame) error) error {
	return streamMerged(ctx, sources, opts, func(f *fanIn) (DropFrame, bool) { return f.mergeDrops(groupBy) }, emit)
}
