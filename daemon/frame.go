package daemon

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/labels"

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
	since    time.Time
	baseline map[string]counters
	sink     *nameSink
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
	if !q.req.GetSinceStreamStart() {
		return
	}
	q.baseline = make(map[string]counters, len(c.subjects))
	for k, s := range c.subjects {
		q.baseline[k] = s.total
	}
	q.sink = newNameSink(c.cfg.NamesPerPod, c.cfg.NamesPerNode, c.cfg.MaxTrackedPods)
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
	if req.GetSinceStreamStart() {
		since = q.since
	}
	f.Since = timestamppb.New(since)
	from, to, elapsed, haveRate := c.clock.Span(q.window)
	f.Interval = durationpb.New(elapsed)
	if !haveRate {
		f.Warnings = append(f.Warnings, "rates need two collector ticks; counting started "+c.started.Format(time.RFC3339))
	}
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
