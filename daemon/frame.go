package daemon

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/isoobs/isoobs/bpf"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/topspec"
)

const defaultTopNames = 5

// Bounds of what one client may ask: past them a request is refused, so one view (or a hostile
// port-forward user) cannot make the daemon build huge frames or hold name state for many
// streams. Each open stream costs a goroutine and, with since_stream_start, name summaries.
const (
	maxTopNames   = 100
	maxTopLimit   = 100_000
	maxTopStreams = 32
)

// checkTopBounds refuses a request past the bounds above, or asking for rates over more
// history than the daemon keeps.
func checkTopBounds(req *isoobsv1.TopRequest, retention time.Duration) error {
	if req.GetTopNames() > maxTopNames {
		return fmt.Errorf("top_names %d is more than the %d a daemon sends", req.GetTopNames(), maxTopNames)
	}
	if req.GetLimit() > maxTopLimit {
		return fmt.Errorf("limit %d is more than %d rows; use 0 for all", req.GetLimit(), maxTopLimit)
	}
	if d := req.GetInterval().AsDuration(); d > retention {
		return fmt.Errorf("interval %s is longer than the history this daemon keeps (--retention %s)", d, retention)
	}
	if d := req.GetSince().AsDuration(); d > retention {
		return fmt.Errorf("since %s is longer than the history this daemon keeps (--retention %s)", d, retention)
	}
	if n := len(req.GetNameRegex()); n > maxNameRegex {
		return fmt.Errorf("name_regex is %d bytes, more than the %d a daemon accepts", n, maxNameRegex)
	}
	return nil
}

// topQuery is one validated Top stream.
type topQuery struct {
	req      *isoobsv1.TopRequest
	selector labels.Selector
	sortKey  string
	window   time.Duration
	topNames int
	// Since-stream-start scope: totals at stream start and the stream's own name summaries.
	since           time.Time
	baseline        map[string]counters
	serversBaseline map[string]serverSet
	sink            *nameSink
	// filter keeps only matching query names (counted in sink.matched from the stream's start,
	// tick startTick); overflowAt is the probe's name-table overflow count then.
	filter     *nameFilter
	startTick  uint64
	overflowAt uint64
	// lookBack is TopRequest.since: counts over the history's last lookBack (0: off).
	lookBack time.Duration
}

func windowDuration(w isoobsv1.Window, interval time.Duration) time.Duration {
	switch w {
	case isoobsv1.Window_WINDOW_1S:
		return time.Second
	case isoobsv1.Window_WINDOW_10S:
		return 10 * time.Second
	case isoobsv1.Window_WINDOW_1M:
		return time.Minute
	case isoobsv1.Window_WINDOW_5M:
		return 5 * time.Minute
	default:
		return interval
	}
}

// newTopQuery checks a request and says what is wrong with it.
func newTopQuery(req *isoobsv1.TopRequest, collectorInterval time.Duration) (*topQuery, error) {
	switch req.GetDimension() {
	case isoobsv1.Dimension_DIMENSION_UNSPECIFIED, isoobsv1.Dimension_DIMENSION_DNS:
	default:
		return nil, fmt.Errorf("dimension %v is not served by this daemon (only DNS)", req.GetDimension())
	}
	if _, ok := isoobsv1.GroupBy_name[int32(req.GetGroupBy())]; !ok {
		return nil, fmt.Errorf("unknown group_by %d", req.GetGroupBy())
	}
	q := &topQuery{req: req, selector: labels.Everything(), sortKey: "qps", topNames: defaultTopNames}
	if s := strings.TrimSpace(req.GetLabelSelector()); s != "" {
		sel, err := labels.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("label selector %q: %v", s, err)
		}
		q.selector = sel
	}
	if s := req.GetSort(); strings.TrimSpace(s) != "" {
		key, err := topspec.ParseSort(s, "sort")
		if err != nil {
			return nil, fmt.Errorf("sort key %q is not one of %s", s, strings.Join(topspec.SortKeys, "|"))
		}
		q.sortKey = key
	}
	if req.TopNames > 0 {
		q.topNames = int(req.TopNames)
	}
	interval := collectorInterval
	if d := req.GetInterval(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, fmt.Errorf("interval: %v", d)
		}
		if d.AsDuration() > interval {
			interval = d.AsDuration()
		}
	}
	q.window = windowDuration(req.GetWindow(), interval)
	filter, err := newNameFilter(req.GetNameRegex(), req.GetZone())
	if err != nil {
		return nil, err
	}
	q.filter = filter
	if d := req.GetSince(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() <= 0 {
			return nil, fmt.Errorf("since %v: give a positive look-back such as 5m", d.AsDuration())
		}
		switch {
		case req.GetSinceStreamStart():
			return nil, errors.New("since looks back over the daemon's history; since_stream_start counts from now on: ask for one of them")
		case filter != nil:
			return nil, errors.New("since cannot be combined with a name filter: the history keeps per-pod counts, not per-name counts (a name filter counts from the stream's start)")
		case req.GetGroupBy() == isoobsv1.GroupBy_GROUP_BY_QNAME:
			return nil, errors.New("since cannot group by qname: the history keeps per-pod counts, not per-name counts; group by pod, workload, namespace or node")
		}
		q.lookBack = d.AsDuration()
		q.window = q.lookBack
	}
	return q, nil
}

// frameInterval is the request interval rounded up to whole collector ticks.
func frameTicks(req *isoobsv1.TopRequest, collectorInterval time.Duration) int {
	d := req.GetInterval().AsDuration()
	if d <= collectorInterval {
		return 1
	}
	return int((d + collectorInterval - 1) / collectorInterval)
}

// startStream snapshots the totals a since-stream-start query subtracts.
func (c *collector) startStream(q *topQuery) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q.since = c.lastTick
	if q.since.IsZero() {
		q.since = c.started
	}
	if !q.req.GetSinceStreamStart() && q.filter == nil {
		return
	}
	if q.req.GetSinceStreamStart() {
		q.baseline = make(map[string]counters, len(c.subjects))
		q.serversBaseline = make(map[string]serverSet, len(c.subjects))
		for k, s := range c.subjects {
			q.baseline[k] = s.total
			if s.servers.by != nil {
				q.serversBaseline[k] = s.servers.clone()
			}
		}
	}
	q.sink = newNameSink(c.cfg.NamesPerPod, c.cfg.NamesPerNode, c.cfg.MaxTrackedPods)
	if q.filter != nil {
		// Names drained from the next tick on: the queries after q.since.
		q.sink.filter, q.sink.clock = q.filter, c.clock
		q.startTick, _, _ = c.clock.Latest()
		q.overflowAt = c.stats.NameOverflow
	}
	c.sinks[q.sink] = struct{}{}
}

func (c *collector) matches(q *topQuery, s *subject) bool {
	req := q.req
	if s.uid == "" && s.hub == nil && !req.GetIncludeUnresolved() {
		return false
	}
	if req.GetNamespace() != "" && (s.meta == nil || s.meta.Namespace != req.GetNamespace()) {
		return false
	}
	if req.GetPod() != "" && s.uid != req.GetPod() && (s.meta == nil || s.meta.Name != req.GetPod()) {
		return false
	}
	if !q.selector.Empty() {
		if s.meta == nil || !q.selector.Matches(labels.Set(s.meta.Labels)) {
			return false
		}
	}
	return true
}

// frame builds the current frame for q.
func (c *collector) frame(q *topQuery) *isoobsv1.TopFrame {
	c.mu.RLock()
	defer c.mu.RUnlock()
	req := q.req
	_, now, _ := c.clock.Latest()
	f := &isoobsv1.TopFrame{Node: c.cfg.NodeName, Time: timestamppb.New(now)}
	since := c.started
	if req.GetSinceStreamStart() || q.filter != nil {
		since = q.since
	}
	from, to, elapsed, haveRate := c.clock.Span(q.window)
	if q.filter != nil {
		from, elapsed, haveRate = c.filteredSpan(q, from, to, haveRate)
	}
	if q.lookBack > 0 && haveRate {
		since = c.clock.Time(from)
	}
	f.Since = timestamppb.New(since)
	f.Interval = durationpb.New(elapsed)
	if !haveRate {
		f.Warnings = append(f.Warnings, "rates need two collector ticks; counting started "+c.started.Format(time.RFC3339))
	}
	f.Warnings = append(f.Warnings, c.scopeWarnings(q, f, elapsed)...)
	if c.readErr != nil {
		f.Warnings = append(f.Warnings, "reading the probe failed: "+c.readErr.Error())
	}

	source := req.GetSource()
	parts, hubbleNames := c.parts(q, haveRate, from, to)

	seconds := elapsed.Seconds()
	scopeSeconds := now.Sub(since).Seconds()
	groupBy := req.GetGroupBy()
	groups := groupParts(groupBy, parts)
	if groupBy == isoobsv1.GroupBy_GROUP_BY_QNAME {
		// Thousands of names: rank them on their counts before building rows for the few shown.
		groups, f.Truncated = topQnameGroups(groups, q.sortKey, int(req.GetLimit()), c.cfg.NamesPerNode)
	}
	rows := make([]*isoobsv1.DNSRow, 0, len(groups))
	for _, g := range groups {
		rows = append(rows, c.row(groupBy, g, q.topNames, seconds, scopeSeconds))
	}
	if q.lookBack > 0 && haveRate {
		c.setSeen(groupBy, parts, groups, rows, from, to)
	}
	sortRows(rows, q.sortKey)
	if limit := int(req.GetLimit()); limit > 0 && len(rows) > limit {
		f.Truncated += uint32(len(rows) - limit)
		rows = rows[:limit]
	}
	f.Rows = rows

	total := &group{key: "total"}
	for i := range parts {
		total.add(&parts[i])
	}
	unfiltered := req.GetNamespace() == "" && req.GetPod() == "" && q.selector.Empty() && !req.GetIncludeUnresolved()
	if unfiltered && !hubbleNames && source != isoobsv1.Source_SOURCE_HUBBLE {
		// The node-wide summary saw every name of every pod: tighter bounds than merging.
		if q.sink != nil {
			total.names = []*nameSummary{q.sink.node}
		} else {
			total.names = []*nameSummary{c.nodeNames}
		}
	}
	f.Total = c.row(isoobsv1.GroupBy_GROUP_BY_NODE, total, q.topNames, seconds, scopeSeconds)
	if q.lookBack > 0 && haveRate {
		c.setSeen(isoobsv1.GroupBy_GROUP_BY_NODE, parts, []*group{total}, []*isoobsv1.DNSRow{f.Total}, from, to)
	}
	f.TopNames = f.Total.TopNames
	return f
}

// parts are the contributions of the subjects q selects; hubbleNames says some names come
// from Hubble (the probe's node-wide name summary lacks them). Callers hold c.mu.
func (c *collector) parts(q *topQuery, haveRate bool, from, to uint64) (parts []part, hubbleNames bool) {
	source := q.req.GetSource()
	parts = make([]part, 0, len(c.subjects))
	for _, s := range c.subjects {
		if !wantSubject(source, s) || !c.matches(q, s) {
			continue
		}
		p := c.part(q, s, haveRate, from, to)
		switch {
		case q.filter != nil:
			if !c.filteredPart(q, &p, haveRate, from, to) {
				continue
			}
			if s.hub != nil {
				p.hub = splitHubble(s, &counters{}, &rateSample{}) // identity and node only
				hubbleNames = true
			}
			parts = append(parts, p)
			continue
		case q.lookBack > 0:
			if !haveRate || p.rate == (rateSample{}) {
				continue // nothing counted in the look-back window
			}
			p.tot = countersOf(&p.rate)
			p.servers = nil // not kept in history
		}
		if s.hub != nil {
			p.hub = splitHubble(s, &p.tot, &p.rate)
			hubbleNames = true
		} else if s.peer != nil && source != isoobsv1.Source_SOURCE_EBPF {
			// Merged: the probe's counts, the peer's identity, denials and proxy latency.
			peer := c.part(q, s.peer, haveRate, from, to)
			p.hub = splitHubble(s.peer, &peer.tot, &peer.rate)
			if (p.names == nil || p.names.names.Len() == 0) && peer.names != nil && peer.names.names.Len() > 0 {
				// Names the probe's name table did not keep.
				p.names = peer.names
				hubbleNames = true
			}
		}
		parts = append(parts, p)
	}
	return parts, hubbleNames
}

// filteredSpan narrows a rate window to the part after a filtered stream started: its matched
// counts are zero before, so an older start would dilute the rate.
func (c *collector) filteredSpan(q *topQuery, from, to uint64, ok bool) (uint64, time.Duration, bool) {
	if !ok {
		return from, 0, false
	}
	for from < q.startTick && from < to {
		from = c.clock.Next(from)
	}
	if from >= to {
		return from, 0, false
	}
	return from, c.clock.Time(to).Sub(c.clock.Time(from)), true
}

// filteredPart replaces a part's counts with the subject's queries for names the stream's
// filter keeps; false when it asked none since the stream started. Callers hold c.mu.
func (c *collector) filteredPart(q *topQuery, p *part, haveRate bool, from, to uint64) bool {
	m := q.sink.matched[p.s.key]
	if m == nil || m.queries == 0 {
		return false
	}
	p.tot = counters{Queries: m.queries}
	p.servers = nil // counted per pod, not per name
	p.tot.Rcode[bpf.RcodeNXDomain] = m.nxdomain
	p.rate = rateSample{}
	if haveRate {
		now, old := m.series.At(to), m.series.At(from)
		p.rate[rQueries], p.rate[rNXDomain] = now[0]-old[0], now[1]-old[1]
	}
	p.names = q.sink.perSubject[p.s.key]
	p.hub = nil
	return true
}

// countersOf is a look-back part's counters: what the history keeps (the rate fields),
// latency, bytes and query types aside.
func countersOf(r *rateSample) counters {
	var t counters
	t.Queries, t.Responses, t.Malformed = r[rQueries], r[rResponses], r[rMalformed]
	t.Rcode[bpf.RcodeNoError], t.Rcode[bpf.RcodeNXDomain], t.Rcode[bpf.RcodeServFail] = r[rNoError], r[rNXDomain], r[rServFail]
	t.Rcode[bpf.RcodeRefused], t.Rcode[bpf.RcodeOther] = r[rRefused], r[rOtherRcode]
	t.ServerQueries, t.ServerResponses, t.PolicyDenied = r[rServed], r[rServedResponses], r[rPolicyDenied]
	return t
}

// scopeWarnings say what a filtered or look-back frame counts and what it cannot. Callers
// hold c.mu.
func (c *collector) scopeWarnings(q *topQuery, f *isoobsv1.TopFrame, elapsed time.Duration) []string {
	var out []string
	if q.filter != nil {
		// Stale: keep the sink's subjects to those still tracked.
		for key := range q.sink.matched {
			if c.subjects[key] == nil {
				delete(q.sink.matched, key)
			}
		}
		if n := c.stats.NameOverflow - min(q.overflowAt, c.stats.NameOverflow); n > 0 {
			f.NameOverflow = n
			out = append(out, fmt.Sprintf("the probe's name table was full for %d name increments since this stream started: filtered counts may be low by up to %d", n, n))
		}
	}
	if q.lookBack > 0 {
		out = append(out, "look-back: latency, bytes, query types and servers are not kept in history; top names are counted since the daemon started ("+c.started.UTC().Format(time.RFC3339)+")")
		if _, _, ok := c.clock.Latest(); ok && elapsed < q.lookBack-c.cfg.Interval {
			out = append(out, fmt.Sprintf("look-back: history covers %s of the %s asked (this daemon counts since %s)", elapsed.Round(time.Second), q.lookBack, c.started.UTC().Format(time.RFC3339)))
		}
	}
	return out
}

// setSeen gives each look-back row the time its queries (sent, or served by a DNS server)
// started and ended within [from, to]: the earliest and latest over the row's parts.
// rows[i] is groups[i]'s row. Callers hold c.mu.
func (c *collector) setSeen(by isoobsv1.GroupBy, parts []part, groups []*group, rows []*isoobsv1.DNSRow, from, to uint64) {
	type span struct{ first, last time.Time }
	spans := map[string]*span{}
	changed := func(a, b *rateSample) bool { return a[rQueries] != b[rQueries] || a[rServed] != b[rServed] }
	for i := range parts {
		s := parts[i].s
		first, last, ok := s.series.Activity(c.clock, from, to, changed)
		if !ok {
			continue
		}
		k := groupKey(by, s)
		if sp := spans[k]; sp == nil {
			spans[k] = &span{first, last}
		} else {
			if first.Before(sp.first) {
				sp.first = first
			}
			if last.After(sp.last) {
				sp.last = last
			}
		}
	}
	for i, g := range groups {
		k := g.key
		if by == isoobsv1.GroupBy_GROUP_BY_NODE {
			k = ""
		}
		if sp := spans[k]; sp != nil {
			rows[i].FirstSeen, rows[i].LastSeen = timestamppb.New(sp.first), timestamppb.New(sp.last)
		}
	}
}
