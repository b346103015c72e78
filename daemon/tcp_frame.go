package daemon

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/isoobs/isoobs/bpf"
	"github.com/isoobs/isoobs/hubble"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/topspec"
)

// TCP sort keys (TopRequest.sort with DIMENSION_TCP). All but TCPSortName sort descending, on
// the rate first and the frame's total next.
const (
	TCPSortErrors  = "errors" // connect failures + resets per second (the default)
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

// tcpQuery is one validated TCP Top stream.
type tcpQuery struct {
	req      *isoobsv1.TopRequest
	selector labels.Selector
	sortKey  string
	window   time.Duration
	since    time.Time
	baseline map[string]bpf.TCPCounters // since-stream-start: totals when the stream opened
	// DIMENSION_DROPS: the drop view, and its since-stream-start baselines.
	drops            bool
	dropBaseline     map[string]map[uint32]bpf.DropCounters
	noSocketBaseline map[uint32]bpf.DropCounters
	// since-stream-start: each pod's peers when the stream opened
	peerBaseline map[string]map[peerID]bpf.PeerCounters
	// since-stream-start: the node's drop locations when the stream opened
	locationBaseline map[dropLocation]uint64
	// since-stream-start: Hubble's drops per pod and reason when the stream opened
	hubbleDropBaseline map[hubble.PodKey]map[string]uint64
}

func newTCPQuery(req *isoobsv1.TopRequest, collectorInterval time.Duration) (*tcpQuery, error) {
	switch req.GetGroupBy() {
	case isoobsv1.GroupBy_GROUP_BY_UNSPECIFIED, isoobsv1.GroupBy_GROUP_BY_POD, isoobsv1.GroupBy_GROUP_BY_WORKLOAD,
		isoobsv1.GroupBy_GROUP_BY_NAMESPACE, isoobsv1.GroupBy_GROUP_BY_NODE:
	case isoobsv1.GroupBy_GROUP_BY_PEER:
		if req.GetDimension() == isoobsv1.Dimension_DIMENSION_DROPS {
			return nil, errors.New("group_by peer is a TCP grouping: drops are grouped by pod, workload, namespace or node")
		}
	default:
		return nil, fmt.Errorf("group_by %v is not a TCP grouping: use pod, workload, namespace, peer or node", req.GetGroupBy())
	}
	q := &tcpQuery{req: req, selector: labels.Everything(), sortKey: TCPSortErrors}
	keys := TCPSortKeys
	if req.GetDimension() == isoobsv1.Dimension_DIMENSION_DROPS {
		q.drops, q.sortKey, keys = true, DropSortKeys[0], DropSortKeys
	}
	if s := strings.TrimSpace(req.GetLabelSelector()); s != "" {
		sel, err := labels.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("label selector %q: %v", s, err)
		}
		q.selector = sel
	}
	if s := strings.ToLower(strings.TrimSpace(req.GetSort())); s != "" {
		if !slices.Contains(keys, s) {
			return nil, fmt.Errorf("sort key %q is not one of %s", req.GetSort(), strings.Join(keys, "|"))
		}
		q.sortKey = s
	}
	interval := collectorInterval
	if d := req.GetInterval(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, fmt.Errorf("interval: %v", d)
		}
		interval = max(interval, d.AsDuration())
	}
	q.window = windowDuration(req.GetWindow(), interval)
	return q, nil
}

func (c *tcpCollector) startStream(q *tcpQuery) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q.since = c.lastTick
	if q.since.IsZero() {
		q.since = c.started
	}
	if q.req.GetSinceStreamStart() {
		q.baseline = make(map[string]bpf.TCPCounters, len(c.subjects))
		q.dropBaseline = make(map[string]map[uint32]bpf.DropCounters, len(c.subjects))
		q.peerBaseline = make(map[string]map[peerID]bpf.PeerCounters, len(c.subjects))
		for k, s := range c.subjects {
			q.baseline[k] = s.total
			if len(s.drops) > 0 {
				q.dropBaseline[k] = maps.Clone(s.drops)
			}
			if len(s.peers) > 0 {
				q.peerBaseline[k] = maps.Clone(s.peers)
			}
		}
		q.noSocketBaseline = maps.Clone(c.noSocket)
		q.locationBaseline = maps.Clone(c.dropLocations)
		if agg := c.hubbleAggregates(); agg != nil {
			q.hubbleDropBaseline = map[hubble.PodKey]map[string]uint64{}
			agg.ReadPods(func(p *hubble.PodStats) {
				if p.Drops > 0 {
					q.hubbleDropBaseline[p.PodKey] = maps.Clone(p.DropsByReason)
				}
			})
		}
	}
}

func (c *tcpCollector) matches(q *tcpQuery, s *tcpSubject) bool {
	req := q.req
	if s.uid == "" && !req.GetIncludeUnresolved() {
		return false
	}
	if req.GetNamespace() != "" && (s.meta == nil || s.meta.Namespace != req.GetNamespace()) {
		return false
	}
	if req.GetPod() != "" && s.uid != req.GetPod() && (s.meta == nil || s.meta.Name != req.GetPod()) {
		return false
	}
	if !q.selector.Empty() && (s.meta == nil || !q.selector.Matches(labels.Set(s.meta.Labels))) {
		return false
	}
	return true
}

// tcpGroup accumulates the subjects of one row.
type tcpGroup struct {
	key   string
	first *tcpSubject
	tot   bpf.TCPCounters
	rate  tcpRate
	pods  int
	// peers summed over the group's pods; peersDropped: events of peers past a pod's bound
	peers        map[peerID]bpf.PeerCounters
	peersDropped uint64
}

func tcpGroupKey(by isoobsv1.GroupBy, s *tcpSubject) string {
	switch by {
	case isoobsv1.GroupBy_GROUP_BY_WORKLOAD:
		if s.meta == nil {
			return "subject/" + s.key
		}
		return s.meta.Namespace + "/" + s.meta.WorkloadKind + "/" + s.meta.Workload
	case isoobsv1.GroupBy_GROUP_BY_NAMESPACE:
		if s.meta == nil {
			return ""
		}
		return s.meta.Namespace
	case isoobsv1.GroupBy_GROUP_BY_NODE:
		return ""
	default:
		return s.key
	}
}

// frame builds the current TCP frame for q.
func (c *tcpCollector) frame(q *tcpQuery) *isoobsv1.TopFrame {
	c.mu.RLock()
	defer c.mu.RUnlock()
	req := q.req
	_, now, _ := c.clock.Latest()
	f := &isoobsv1.TopFrame{Node: c.cfg.NodeName, Time: timestamppb.New(now)}
	since := c.started
	if req.GetSinceStreamStart() {
		since = q.since
	}
	f.Since = timestamppb.New(since)
	from, to, elapsed, haveRate := c.clock.Span(q.window)
	f.Interval = durationpb.New(elapsed)
	if !haveRate {
		f.Warnings = append(f.Warnings, "rates need two collector ticks; counting started "+c.started.Format(time.RFC3339))
	} else if q.window > elapsed+c.cfg.Interval {
		f.Warnings = append(f.Warnings, fmt.Sprintf("TCP rates are over the last %s (the history the daemon keeps for TCP), not %s", elapsed.Round(time.Second), q.window))
	}
	if c.readErr != nil {
		f.Warnings = append(f.Warnings, "reading the TCP probe failed: "+c.readErr.Error())
	}
	if c.stats.CgroupOverflow > 0 {
		f.Warnings = append(f.Warnings, fmt.Sprintf("%d TCP events not counted: the probe's cgroup map is full (%d entries)", c.stats.CgroupOverflow, c.stats.Cgroups.Max))
	}
	if q.drops {
		c.dropFrame(q, f, from, to, haveRate, elapsed.Seconds())
		return f
	}
	groupBy := req.GetGroupBy()
	var groups []*tcpGroup
	byKey := map[string]*tcpGroup{}
	total := &tcpGroup{key: "total"}
	for _, s := range c.subjects {
		if !c.matches(q, s) {
			continue
		}
		tot := s.total
		if q.baseline != nil {
			b := q.baseline[s.key]
			tcpSub(&tot, &b)
		}
		var rate tcpRate
		if haveRate {
			rate = s.series.At(to)
			old := s.series.At(from)
			for i := range rate {
				rate[i] -= old[i]
			}
		}
		k := tcpGroupKey(groupBy, s)
		g := byKey[k]
		if g == nil {
			g = &tcpGroup{key: k}
			byKey[k] = g
			groups = append(groups, g)
		}
		peers := q.subjectPeers(s)
		for _, g := range []*tcpGroup{g, total} {
			if g.first == nil {
				g.first = s
			}
			tcpAdd(&g.tot, &tot)
			for i := range rate {
				g.rate[i] += rate[i]
			}
			g.pods++
			g.peersDropped += s.peersDropped
			if len(peers) == 0 {
				continue
			}
			if g.peers == nil {
				// A pod's row reads its own map; a group sums into a map of its own.
				if g != total && (groupBy == isoobsv1.GroupBy_GROUP_BY_POD || groupBy == isoobsv1.GroupBy_GROUP_BY_UNSPECIFIED) {
					g.peers = peers
					continue
				}
				g.peers = make(map[peerID]bpf.PeerCounters, len(peers))
			}
			for id, p := range peers {
				sum := g.peers[id]
				peerAdd(&sum, p)
				g.peers[id] = sum
			}
		}
	}
	seconds := elapsed.Seconds()
	rows := make([]*isoobsv1.TCPRow, 0, len(groups))
	if groupBy == isoobsv1.GroupBy_GROUP_BY_PEER {
		rows = c.peerRows(q)
	} else {
		for _, g := range groups {
			rows = append(rows, c.row(q, groupBy, g, seconds))
		}
	}
	SortTCPRows(rows, q.sortKey)
	if limit := int(req.GetLimit()); limit > 0 && len(rows) > limit {
		f.Truncated = uint32(len(rows) - limit)
		rows = rows[:limit]
	}
	f.TcpRows = rows
	f.TcpTotal = c.row(q, isoobsv1.GroupBy_GROUP_BY_NODE, total, seconds)
	return f
}

func (c *tcpCollector) row(q *tcpQuery, by isoobsv1.GroupBy, g *tcpGroup, seconds float64) *isoobsv1.TCPRow {
	t := &g.tot
	r := &isoobsv1.TCPRow{
		Node:        c.cfg.NodeName,
		Pods:        uint32(g.pods),
		ActiveOpens: t.ActiveOpens, PassiveOpens: t.PassiveOpens,
		ConnectRefused: t.ConnectRefused, ConnectTimeouts: t.ConnectTimeout, ConnectOther: t.ConnectOther,
		ResetsSent: t.ResetsSent, ResetsReceived: t.ResetsReceived,
		RetransSegs: t.RetransSegs, RetransBytes: t.RetransBytes,
		BytesOut: t.BytesOut, BytesIn: t.BytesIn, SegsOut: t.SegsOut, SegsIn: t.SegsIn,
		RttLog2Us:        append([]uint64(nil), t.RTTLog2US[:]...),
		RttP50Ms:         topspec.Log2Quantile(t.RTTLog2US[:], 0.50),
		RttP99Ms:         topspec.Log2Quantile(t.RTTLog2US[:], 0.99),
		TopPeers:         topPeers(g.peers, q.sortKey, topPeersPerRow),
		PeerUnattributed: t.PeerUnattributed + g.peersDropped,
	}
	var active int
	for _, p := range g.peers {
		if peerEvents(p) > 0 {
			active++
		}
	}
	r.OtherPeers = uint32(active - len(r.TopPeers))
	if seconds > 0 {
		r.OpensPerSecond = float64(g.rate[tcpRateOpens]) / seconds
		r.ConnectFailuresPerSecond = float64(g.rate[tcpRateFailures]) / seconds
		r.ResetsPerSecond = float64(g.rate[tcpRateResets]) / seconds
		r.RetransPerSecond = float64(g.rate[tcpRateRetrans]) / seconds
		r.BytesOutPerSecond = float64(g.rate[tcpRateBytesOut]) / seconds
		r.BytesInPerSecond = float64(g.rate[tcpRateBytesIn]) / seconds
		r.SegsOutPerSecond = float64(g.rate[tcpRateSegsOut]) / seconds
	}
	s := g.first
	if s == nil || by == isoobsv1.GroupBy_GROUP_BY_NODE {
		return r
	}
	if s.meta != nil {
		r.Namespace = s.meta.Namespace
		if by != isoobsv1.GroupBy_GROUP_BY_NAMESPACE {
			r.Workload, r.WorkloadKind = s.meta.Workload, s.meta.WorkloadKind
		}
	}
	if by == isoobsv1.GroupBy_GROUP_BY_POD || by == isoobsv1.GroupBy_GROUP_BY_UNSPECIFIED {
		r.PodUid, r.Cgroup, r.CgroupId = s.uid, s.cgroupPath, s.cgroupID
		if s.meta != nil {
			r.Pod, r.Labels = s.meta.Name, s.meta.Labels
		}
	}
	return r
}

// TCPRowErrors is a row's connect failures and resets per second: the default ranking.
func TCPRowErrors(r *isoobsv1.TCPRow) float64 {
	return r.GetConnectFailuresPerSecond() + r.GetResetsPerSecond()
}

// tcpSortValues are what a sort key ranks on: the rate, then the total.
func tcpSortValues(key string, r *isoobsv1.TCPRow) (rate, total float64) {
	switch key {
	case TCPSortFails:
		return r.GetConnectFailuresPerSecond(), float64(r.GetConnectRefused() + r.GetConnectTimeouts() + r.GetConnectOther())
	case TCPSortResets:
		return r.GetResetsPerSecond(), float64(r.GetResetsSent() + r.GetResetsReceived())
	case TCPSortRetrans:
		return r.GetRetransPerSecond(), float64(r.GetRetransSegs())
	case TCPSortOpens:
		return r.GetOpensPerSecond(), float64(r.GetActiveOpens() + r.GetPassiveOpens())
	case TCPSortBytes:
		return r.GetBytesOutPerSecond() + r.GetBytesInPerSecond(), float64(r.GetBytesOut() + r.GetBytesIn())
	case TCPSortRTT:
		return r.GetRttP99Ms(), r.GetRttP50Ms()
	default:
		return TCPRowErrors(r), float64(r.GetConnectRefused() + r.GetConnectTimeouts() + r.GetConnectOther() + r.GetResetsSent() + r.GetResetsReceived())
	}
}

// SortTCPRows orders rows by key (TCPSortKeys), heaviest first; ties and TCPSortName by name.
func SortTCPRows(rows []*isoobsv1.TCPRow, key string) {
	name := func(r *isoobsv1.TCPRow) string {
		n := r.GetNamespace() + "/" + r.GetWorkload() + "/" + r.GetPod() + "/" + r.GetPodUid() + "/" + r.GetCgroup() + "/" + r.GetNode()
		if p := r.GetPeer(); p != nil {
			n += "/" + p.GetIp() + "/" + strconv.FormatUint(uint64(p.GetPort()), 10) + "/" + strconv.FormatBool(p.GetInbound())
		}
		return n
	}
	slices.SortStableFunc(rows, func(a, b *isoobsv1.TCPRow) int {
		if key != TCPSortName {
			ra, ta := tcpSortValues(key, a)
			rb, tb := tcpSortValues(key, b)
			if c := cmp.Compare(rb, ra); c != 0 {
				return c
			}
			if c := cmp.Compare(tb, ta); c != 0 {
				return c
			}
		}
		return strings.Compare(name(a), name(b))
	})
}

// topTCP serves a DIMENSION_TCP stream: one frame every request interval.
func (s *server) topTCP(req *isoobsv1.TopRequest, stream isoobsv1.Daemon_TopServer, limitNS string) error {
	c := s.d.tcp
	if c == nil {
		reason := "the daemon runs without its TCP probe, which also counts drops (--no-tcp)"
		if s.d.tcpErr != nil {
			reason = "the TCP probe did not load: " + s.d.tcpErr.Error()
		}
		return status.Error(codes.Unavailable, reason)
	}
	if err := checkTopBounds(req, c.cfg.Retention); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	q, err := newTCPQuery(req, c.cfg.Interval)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	every := frameTicks(req, c.cfg.Interval)
	ticks, ok := c.subscribeAtMost(maxTopStreams)
	if !ok {
		return status.Errorf(codes.ResourceExhausted, "this daemon serves at most %d TCP top streams at once and all are open; close other views of this node, or retry", maxTopStreams)
	}
	defer c.unsubscribe(ticks)
	c.startStream(q)
	n := 0
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-ticks:
		}
		n++
		if n%every != 0 {
			continue
		}
		f := c.frame(q)
		if limitNS != "" {
			rows := f.TcpRows[:0:0]
			for _, r := range f.TcpRows {
				if r.Namespace == limitNS {
					rows = append(rows, r)
				}
			}
			f.TcpRows = rows
			drops := f.DropRows[:0:0]
			for _, r := range f.DropRows {
				if r.Namespace == limitNS {
					drops = append(drops, r)
				}
			}
			f.DropRows, f.DropNoSocket, f.DropLocations = drops, nil, nil // node-wide: not one namespace's
			f.Warnings = append(f.Warnings, "tenant authorization: limited to namespace "+limitNS)
		}
		if err := stream.Send(f); err != nil {
			return err
		}
	}
}

// tcpStatus adds the TCP probe's programs and loss counters to a Status answer.
func (d *Daemon) tcpStatus(resp *isoobsv1.StatusResponse) {
	if d.tcpErr != nil {
		resp.Probes = append(resp.Probes, &isoobsv1.ProbeStatus{Name: "tcp", Hook: "cgroup_skb, tp_btf", Target: d.cfg.CgroupRoot, Error: d.tcpErr.Error()})
	}
	c := d.tcp
	if c == nil {
		return
	}
	for _, a := range c.src.Attachments() {
		ps := &isoobsv1.ProbeStatus{Name: a.Program, Hook: a.Hook, Target: a.Target, Attached: a.Err == nil}
		if a.Err != nil {
			ps.Error = a.Err.Error()
		}
		resp.Probes = append(resp.Probes, ps)
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	st := c.stats
	resp.Maps = append(resp.Maps, &isoobsv1.MapStatus{Name: "tcp_stats", Entries: uint64(st.Cgroups.Entries), MaxEntries: uint64(st.Cgroups.Max)},
		&isoobsv1.MapStatus{Name: "tcp_cgroup_slots", Entries: uint64(st.CgroupSlots.Entries), MaxEntries: uint64(st.CgroupSlots.Max)},
		&isoobsv1.MapStatus{Name: "drop_stats", Entries: uint64(st.Drops.Entries), MaxEntries: uint64(st.Drops.Max)},
		&isoobsv1.MapStatus{Name: "drop_dsts", Entries: uint64(st.DropDests.Entries), MaxEntries: uint64(st.DropDests.Max)},
		&isoobsv1.MapStatus{Name: "tcp_peers", Entries: uint64(st.Peers.Entries), MaxEntries: uint64(st.Peers.Max)},
		&isoobsv1.MapStatus{Name: "tcp_tracked_pods", Entries: uint64(len(c.subjects)), MaxEntries: uint64(c.cfg.MaxTrackedPods)})
	if resp.Counters == nil {
		resp.Counters = map[string]uint64{}
	}
	for k, v := range map[string]uint64{
		"tcp_probe_cgroup_map_full":           st.CgroupOverflow,
		"tcp_probe_resets_no_socket":          st.ResetsNoSocket,
		"tcp_probe_retransmits_failed":        st.RetransFailed,
		"tcp_probe_not_parsed":                st.NotParsed,
		"tcp_probe_peer_map_full":             st.PeerOverflow,
		"drops_location_map_full":             st.LocationOverflow,
		"tcp_peer_entries_forgotten":          c.peersForgotten,
		"tcp_host_cgroups":                    c.hostCgroups,
		"tcp_host_connections_opened":         c.host.ActiveOpens + c.host.PassiveOpens,
		"tcp_untracked_pods":                  c.untrackedPods,
		"tcp_untracked_opens":                 c.untracked.ActiveOpens + c.untracked.PassiveOpens,
		"tcp_unresolved_cgroups":              c.unresolvedCgroups,
		"tcp_read_errors":                     c.readErrors,
		"tcp_pods_forgotten":                  c.subjectsDeleted,
		"tcp_kernel_entries_forgotten":        c.kernelDeleted,
		"tcp_stats_errors":                    boolCount(c.statsErr != nil),
		"tcp_host_retransmitted_segs":         c.host.RetransSegs,
		"tcp_untracked_retransmit_segs":       c.untracked.RetransSegs,
		"drops_map_full":                      st.DropOverflow,
		"drops_no_socket_packets":             sumDrops(c.noSocket),
		"drops_by_address_packets":            c.dropsByAddress,
		"drops_address_ambiguous":             c.dropsAmbiguousAddress,
		"drops_address_index_builds":          c.podAddrs.builds,
		"drops_destination_map_full":          st.DropDstOverflow,
		"tcp_probe_programs_not_run":          st.ProgramsNotRun,
		"drops_destination_entries_forgotten": c.dropDstsForgotten,
		"drops_host_packets":                  sumDrops(c.hostDrops),
		"drops_untracked_packets":             sumDrops(c.untrackedDrops),
	} {
		resp.Counters[k] = v
	}
}

func sumDrops(m map[uint32]bpf.DropCounters) uint64 {
	var n uint64
	for _, v := range m {
		n += v.Packets
	}
	return n
}
