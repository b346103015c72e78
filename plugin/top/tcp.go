package top

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/topspec"
)

// TCP sort keys accepted by `top tcp --sort`: the daemon's (daemon.TCPSortKeys), the default
// first. All but TCPSortName sort descending, on the rate first and the total next.
const (
	TCPSortErrors  = "errors" // connect failures + resets per second
	TCPSortFails   = "failures"
	TCPSortResets  = "resets"
	TCPSortRetrans = "retrans"
	TCPSortOpens   = "opens"
	TCPSortBytes   = "bytes"
	TCPSortRTT     = "rtt"
	TCPSortName    = "name"
)

// TCPSortKeys lists the TCP sort keys, the default first.
var TCPSortKeys = []string{TCPSortErrors, TCPSortFails, TCPSortResets, TCPSortRetrans, TCPSortOpens, TCPSortBytes, TCPSortRTT, TCPSortName}

// TCPGroupBys lists the groupings `top tcp --group-by` accepts.
var TCPGroupBys = []string{GroupByPod, GroupByWorkload, GroupByNamespace, GroupByPeer, GroupByNode}

// ParseTCPSort checks a `top tcp --sort` value.
func ParseTCPSort(s string) (string, error) {
	key := strings.ToLower(strings.TrimSpace(s))
	if slices.Contains(TCPSortKeys, key) {
		return key, nil
	}
	return "", fmt.Errorf("invalid --sort %q: valid keys are %s (e.g. --sort retrans)", s, strings.Join(TCPSortKeys, ", "))
}

// ParseTCPGroupBy checks a `top tcp --group-by` value and returns its wire form.
func ParseTCPGroupBy(s string) (string, isoobsv1.GroupBy, error) {
	if strings.ToLower(strings.TrimSpace(s)) == GroupByPeer {
		return GroupByPeer, isoobsv1.GroupBy_GROUP_BY_PEER, nil
	}
	key, g, err := ParseGroupBy(s)
	if err != nil || !slices.Contains(TCPGroupBys, key) {
		return "", 0, fmt.Errorf("invalid --group-by %q: valid values are %s (e.g. --group-by workload)", s, strings.Join(TCPGroupBys, ", "))
	}
	return key, g, nil
}

// TCPFrame is one merged view of TCP activity, printed by every output format of `top tcp`.
// Its JSON/YAML field names are a stable public schema (one object per line with -o json).
type TCPFrame struct {
	Time            time.Time     `json:"time"`
	Since           time.Time     `json:"since"`
	IntervalSeconds float64       `json:"intervalSeconds"`
	Nodes           []string      `json:"nodes"`
	MissingNodes    []MissingNode `json:"missingNodes"`
	StaleNodes      []StaleNode   `json:"staleNodes"`
	GroupBy         string        `json:"groupBy"`
	Sort            string        `json:"sort"`
	Rows            []TCPRow      `json:"rows"`
	// Total covers every row, including rows cut by --limit.
	Total     TCPRow   `json:"total"`
	Truncated int      `json:"truncated"`
	Warnings  []string `json:"warnings"`
}

// TCPRow is the TCP activity of one group (a pod, workload, namespace or node): counters over
// [Since, Time], rates over the frame's interval.
type TCPRow struct {
	Node         string            `json:"node"`
	Namespace    string            `json:"namespace"`
	Pod          string            `json:"pod"`
	PodUID       string            `json:"podUID"`
	Workload     string            `json:"workload"`
	WorkloadKind string            `json:"workloadKind"`
	Cgroup       string            `json:"cgroup"`
	CgroupID     uint64            `json:"cgroupID"`
	Pods         uint32            `json:"pods"`
	Labels       map[string]string `json:"labels,omitempty"`

	ActiveOpens     uint64  `json:"activeOpens"`
	PassiveOpens    uint64  `json:"passiveOpens"`
	ConnectRefused  uint64  `json:"connectRefused"`
	ConnectTimeouts uint64  `json:"connectTimeouts"`
	ConnectOther    uint64  `json:"connectOther"`
	ResetsSent      uint64  `json:"resetsSent"`
	ResetsReceived  uint64  `json:"resetsReceived"`
	RetransSegs     uint64  `json:"retransSegs"`
	RetransBytes    uint64  `json:"retransBytes"`
	BytesOut        uint64  `json:"bytesOut"`
	BytesIn         uint64  `json:"bytesIn"`
	SegsOut         uint64  `json:"segsOut"`
	SegsIn          uint64  `json:"segsIn"`
	RTTP50Ms        float64 `json:"rttP50Ms"`
	RTTP99Ms        float64 `json:"rttP99Ms"`

	OpensPerSecond           float64 `json:"opensPerSecond"`
	ConnectFailuresPerSecond float64 `json:"connectFailuresPerSecond"`
	ResetsPerSecond          float64 `json:"resetsPerSecond"`
	RetransPerSecond         float64 `json:"retransPerSecond"`
	BytesOutPerSecond        float64 `json:"bytesOutPerSecond"`
	BytesInPerSecond         float64 `json:"bytesInPerSecond"`
	SegsOutPerSecond         float64 `json:"segsOutPerSecond"`

	// TopPeers are the row's heaviest peers by the frame's sort key (at most 5 from each node;
	// the table shows 3), with their share of the row's count; OtherPeers counts the rest.
	// PeerUnattributed are events of the row in no peer's counts (the probe's peer table was
	// full, or the connection is older than the probe).
	TopPeers         []TCPPeer `json:"topPeers"`
	OtherPeers       uint32    `json:"otherPeers"`
	PeerUnattributed uint64    `json:"peerUnattributed"`
	// Peer is the row's peer under --group-by peer (its counters are the peer's; bytes,
	// segments and RTT are per pod only and stay 0).
	Peer *TCPPeer `json:"peer,omitempty"`

	// rttLog2Us is the merged RTT histogram: out of the schema, but rows merge again exactly.
	rttLog2Us []uint64
}

// ConnectFailures counts connects that did not establish.
func (r *TCPRow) ConnectFailures() uint64 {
	return r.ConnectRefused + r.ConnectTimeouts + r.ConnectOther
}

// RetransPercent is the share of segments sent that were retransmits, in percent.
func (r *TCPRow) RetransPercent() float64 {
	if r.SegsOut+r.RetransSegs == 0 {
		return 0
	}
	return 100 * float64(r.RetransSegs) / float64(r.SegsOut+r.RetransSegs)
}

// DisplayName is the row's identity under groupBy.
func (r *TCPRow) DisplayName(groupBy string) string {
	switch groupBy {
	case GroupByWorkload:
		if r.Workload == "" {
			return r.Namespace + "/" + r.Pod
		}
		return r.Namespace + "/" + r.Workload
	case GroupByNamespace:
		return r.Namespace
	case GroupByNode:
		return r.Node
	case GroupByPeer:
		if r.Peer == nil {
			return ""
		}
		return r.Peer.DisplayName()
	default:
		if r.Pod == "" {
			return r.Cgroup
		}
		return r.Namespace + "/" + r.Pod
	}
}

func tcpRowFromProto(p *isoobsv1.TCPRow) TCPRow {
	if p == nil {
		return TCPRow{}
	}
	r := TCPRow{
		Node: p.Node, Namespace: p.Namespace, Pod: p.Pod, PodUID: p.PodUid, Workload: p.Workload, WorkloadKind: p.WorkloadKind,
		Cgroup: p.Cgroup, CgroupID: p.CgroupId, Pods: p.Pods, Labels: p.Labels,
		ActiveOpens: p.ActiveOpens, PassiveOpens: p.PassiveOpens,
		ConnectRefused: p.ConnectRefused, ConnectTimeouts: p.ConnectTimeouts, ConnectOther: p.ConnectOther,
		ResetsSent: p.ResetsSent, ResetsReceived: p.ResetsReceived, RetransSegs: p.RetransSegs, RetransBytes: p.RetransBytes,
		BytesOut: p.BytesOut, BytesIn: p.BytesIn, SegsOut: p.SegsOut, SegsIn: p.SegsIn,
		RTTP50Ms: p.RttP50Ms, RTTP99Ms: p.RttP99Ms,
		OpensPerSecond: p.OpensPerSecond, ConnectFailuresPerSecond: p.ConnectFailuresPerSecond, ResetsPerSecond: p.ResetsPerSecond,
		RetransPerSecond: p.RetransPerSecond, BytesOutPerSecond: p.BytesOutPerSecond, BytesInPerSecond: p.BytesInPerSecond,
		SegsOutPerSecond: p.SegsOutPerSecond,
		rttLog2Us:        append([]uint64(nil), p.RttLog2Us...),
		TopPeers:         []TCPPeer{},
		OtherPeers:       p.OtherPeers,
		PeerUnattributed: p.PeerUnattributed,
	}
	for _, tp := range p.TopPeers {
		r.TopPeers = append(r.TopPeers, tcpPeerFromProto(tp))
	}
	if p.Peer != nil {
		pp := tcpPeerFromProto(p.Peer)
		r.Peer = &pp
	}
	return r
}

// add merges o into r: counters, rates and the RTT histogram add (percentiles are recomputed
// from the histogram); identity fields that differ are cleared.
func (r *TCPRow) add(o *TCPRow) {
	r.Pods += o.Pods
	r.ActiveOpens += o.ActiveOpens
	r.PassiveOpens += o.PassiveOpens
	r.ConnectRefused += o.ConnectRefused
	r.ConnectTimeouts += o.ConnectTimeouts
	r.ConnectOther += o.ConnectOther
	r.ResetsSent += o.ResetsSent
	r.ResetsReceived += o.ResetsReceived
	r.RetransSegs += o.RetransSegs
	r.RetransBytes += o.RetransBytes
	r.BytesOut += o.BytesOut
	r.BytesIn += o.BytesIn
	r.SegsOut += o.SegsOut
	r.SegsIn += o.SegsIn
	r.OpensPerSecond += o.OpensPerSecond
	r.ConnectFailuresPerSecond += o.ConnectFailuresPerSecond
	r.ResetsPerSecond += o.ResetsPerSecond
	r.RetransPerSecond += o.RetransPerSecond
	r.BytesOutPerSecond += o.BytesOutPerSecond
	r.BytesInPerSecond += o.BytesInPerSecond
	r.SegsOutPerSecond += o.SegsOutPerSecond
	if len(r.rttLog2Us) < len(o.rttLog2Us) {
		r.rttLog2Us = append(r.rttLog2Us, make([]uint64, len(o.rttLog2Us)-len(r.rttLog2Us))...)
	}
	for i, n := range o.rttLog2Us {
		r.rttLog2Us[i] += n
	}
	r.RTTP50Ms = topspec.Log2Quantile(r.rttLog2Us, 0.50)
	r.RTTP99Ms = topspec.Log2Quantile(r.rttLog2Us, 0.99)
	r.mergePeers(o)
	if r.Node != o.Node {
		r.Node = ""
	}
	if r.Pod != o.Pod || r.PodUID != o.PodUID {
		r.Pod, r.PodUID, r.Cgroup, r.CgroupID, r.Labels = "", "", "", 0, nil
	}
	if r.Workload != o.Workload || r.WorkloadKind != o.WorkloadKind {
		r.Workload, r.WorkloadKind = "", ""
	}
}

func tcpMergeKey(groupBy string, r *TCPRow) string {
	switch groupBy {
	case GroupByWorkload:
		return r.Namespace + "/" + r.WorkloadKind + "/" + r.Workload + "/" + r.Pod
	case GroupByNamespace:
		return r.Namespace
	case GroupByNode:
		return r.Node
	case GroupByPeer:
		if r.Peer == nil {
			return ""
		}
		return r.Peer.key()
	default:
		// A pod lives on one node; an unresolved cgroup id is only unique on its node.
		return r.Node + "/" + r.PodUID + "/" + r.Cgroup
	}
}

// MergeTCP merges the latest TCP frames of several daemons into one frame: rows of the same
// group add exactly (counters, rates, RTT histograms). Rows are left unsorted.
func MergeTCP(frames []*isoobsv1.TopFrame, groupBy string) TCPFrame {
	out := TCPFrame{GroupBy: groupBy, Rows: []TCPRow{}}
	byKey := map[string]int{}
	var intervalSum float64
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
		for _, p := range f.TcpRows {
			r := tcpRowFromProto(p)
			k := tcpMergeKey(groupBy, &r)
			if i, ok := byKey[k]; ok {
				out.Rows[i].add(&r)
				continue
			}
			byKey[k] = len(out.Rows)
			out.Rows = append(out.Rows, r)
		}
		t := tcpRowFromProto(f.TcpTotal)
		out.Total.add(&t)
	}
	if len(out.Nodes) > 0 {
		out.IntervalSeconds = intervalSum / float64(len(out.Nodes))
	}
	out.Total.Node = ""
	if len(out.Nodes) == 1 {
		out.Total.Node = out.Nodes[0]
	}
	slices.Sort(out.Nodes)
	return out
}

func tcpSortValues(key string, r *TCPRow) (rate, total float64) {
	switch key {
	case TCPSortFails:
		return r.ConnectFailuresPerSecond, float64(r.ConnectFailures())
	case TCPSortResets:
		return r.ResetsPerSecond, float64(r.ResetsSent + r.ResetsReceived)
	case TCPSortRetrans:
		return r.RetransPerSecond, float64(r.RetransSegs)
	case TCPSortOpens:
		return r.OpensPerSecond, float64(r.ActiveOpens + r.PassiveOpens)
	case TCPSortBytes:
		return r.BytesOutPerSecond + r.BytesInPerSecond, float64(r.BytesOut + r.BytesIn)
	case TCPSortRTT:
		return r.RTTP99Ms, r.RTTP50Ms
	default:
		return r.ConnectFailuresPerSecond + r.ResetsPerSecond, float64(r.ConnectFailures() + r.ResetsSent + r.ResetsReceived)
	}
}

// SortedLimited returns a copy of f with rows sorted by key (heaviest first) and cut to limit
// (0: all); cut rows are counted in Truncated.
func (f TCPFrame) SortedLimited(key string, limit int) TCPFrame {
	var values func(*TCPRow) (float64, float64)
	if key != TCPSortName {
		values = func(r *TCPRow) (float64, float64) { return tcpSortValues(key, r) }
	}
	rows, cut := sortLimit(f.Rows, values, func(r *TCPRow) string { return r.DisplayName(f.GroupBy) + "/" + r.Node }, limit)
	f.Sort, f.Truncated = key, f.Truncated+cut
	rankPeers(rows, key)
	total := []TCPRow{f.Total}
	rankPeers(total, key)
	f.Total = total[0]
	f.Rows = rows
	return f
}

// latestFrames starts a new round and returns the latest frames of the sources neither failed
// nor stalled (as merge chooses them), and the stalled ones.
func (f *fanIn) latestFrames() (frames []*isoobsv1.TopFrame, stale []StaleNode) {
	now := f.now()
	for i, latest := range f.latest {
		switch {
		case latest == nil || (f.ended[i] != nil && f.ended[i] != io.EOF):
		case f.ended[i] == nil && f.staleAfter > 0 && now.Sub(f.at[i]) > f.staleAfter:
			stale = append(stale, StaleNode{Node: f.sources[i].Name, LastFrame: f.at[i]})
		default:
			frames = append(frames, latest)
		}
		f.fresh[i] = false
	}
	return frames, stale
}

// mergeWarnings are the warnings every merged frame carries: the fan-in's and the stalled nodes'.
func (f *fanIn) mergeWarnings(stale []StaleNode) []string {
	w := append([]string(nil), f.warnings...)
	for _, s := range stale {
		w = append(w, fmt.Sprintf("%s: no frame for %s (stream stalled); its rows are left out", s.Node, f.now().Sub(s.LastFrame).Round(time.Second)))
	}
	return w
}

// mergeTCP is merge for TCP frames: the same choice of sources, MergeTCP instead of Merge.
func (f *fanIn) mergeTCP(groupBy string) (frame TCPFrame, ok bool) {
	frames, stale := f.latestFrames()
	if len(frames) == 0 {
		return TCPFrame{}, false
	}
	frame = MergeTCP(frames, groupBy)
	frame.Warnings = append(frame.Warnings, f.mergeWarnings(stale)...)
	frame.MissingNodes = append(frame.MissingNodes, f.missing...)
	frame.StaleNodes = append(frame.StaleNodes, stale...)
	return frame, true
}

// StreamTCP is Stream for `top tcp`: one Top stream (DIMENSION_TCP) per source, emit called
// with a merged TCPFrame whenever every live source has sent a new frame (or MaxWait after the
// first one). Failing sources are dropped with a warning; see Stream.
func StreamTCP(ctx context.Context, sources []Source, opts StreamOptions, groupBy string, emit func(TCPFrame) error) error {
	return streamMerged(ctx, sources, opts, func(f *fanIn) (TCPFrame, bool) { return f.mergeTCP(groupBy) }, emit)
}

// streamMerged is Stream's loop with another merge: it opens the sources, keeps their latest
// frames in a fanIn and emits merge's frame when every live source sent one (or MaxWait later).
func streamMerged[F any](ctx context.Context, sources []Source, opts StreamOptions, merge func(*fanIn) (F, bool), emit func(F) error) error {
	if len(sources) == 0 {
		return errors.New("no isoobs daemon to read from")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan sourceEvent)
	for i, src := range sources {
		go readSource(ctx, i, src, opts.Request, events)
	}
	interval := opts.Request.GetInterval().AsDuration()
	if interval <= 0 {
		interval = time.Second
	}
	maxWait := opts.MaxWait
	if maxWait <= 0 {
		maxWait = interval
	}
	fan := newFanIn(sources, opts)
	fan.staleAfter = staleIntervals * interval
	var wait <-chan time.Time
	emitMerged := func() error {
		frame, ok := merge(fan)
		if !ok {
			return nil
		}
		wait = nil
		if err := emit(frame); err != nil {
			if errors.Is(err, ErrStop) {
				return errStopped
			}
			return err
		}
		return nil
	}
	for {
		var err error
		select {
		case ev := <-events:
			if ev.err != nil {
				if fan.end(ev.index, ev.err) {
					err = emitMerged()
				}
				if err == nil && fan.done() {
					return fan.firstErr
				}
			} else if fan.add(ev.index, ev.frame) {
				err = emitMerged()
			} else if wait == nil {
				wait = time.After(maxWait)
			}
		case <-wait:
			if fan.anyFresh() {
				err = emitMerged()
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		if errors.Is(err, errStopped) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
