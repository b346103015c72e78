package daemon

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/isoobs/isoobs/daemon/window"
	"github.com/isoobs/isoobs/hubble"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	flowpb "github.com/isoobs/isoobs/proto/observer/flow"
	"github.com/isoobs/isoobs/topspec"
)

// top http: Hubble's L7 HTTP flows (Cilium's proxy logs a REQUEST record and a RESPONSE record
// per request, the response carrying the status code and the proxy's latency) counted per pod,
// role (the server that answered, the client that asked) and observation point (the proxy of
// an ingress or an egress policy). Bounded: at most httpMaxPathsPerRow method + path templates
// per row (the rest counted in "other") and 4 rows per tracked pod.

const (
	// httpMaxPathsPerRow bounds the path templates a row names.
	httpMaxPathsPerRow = 32
)

type httpKey struct {
	pod    hubble.PodKey
	client bool
	egress bool
}

type httpPathKey struct{ method, path string }

type httpPathCount struct{ requests, s4xx, s5xx uint64 }

// httpStats is one row's cumulative counts.
type httpStats struct {
	gen                          uint64 // which incarnation (a forgotten key comes back anew)
	workload, workloadKind, node string
	service                      string
	labels                       []string
	identity                     uint32
	requests, responses, denied  uint64
	noLatency                    uint64
	status                       [6]uint64 // [0] other, [1..5] 1xx..5xx
	latency                      map[uint16]uint64
	paths                        map[httpPathKey]*httpPathCount
	other                        httpPathCount
	lastSeen                     time.Time
	// History (http_history.go): the order paths were first counted in (a history slot holds
	// their counts in this order), whether anything was counted since the last tick, and the
	// row's samples, one per collector tick it changed in.
	pathOrder []httpPathKey
	changed   bool
	hist      *window.Series[httpSample]
}

func (s *httpStats) clone() *httpStats {
	c := *s
	c.latency = maps.Clone(s.latency)
	c.hist = nil // read under httpAgg.mu only
	c.paths = make(map[httpPathKey]*httpPathCount, len(s.paths))
	for k, v := range s.paths {
		p := *v
		c.paths[k] = &p
	}
	return &c
}

// httpAgg aggregates HTTP flows; Observe runs on the Hubble client's goroutine.
type httpAgg struct {
	maxKeys   int
	retention time.Duration
	now       func() time.Time

	mu        sync.Mutex
	keys      map[httpKey]*httpStats
	gen       uint64
	untracked uint64 // records of rows past maxKeys
	scratch   []byte // record's packing buffer
	lastGC    time.Time
}

func newHTTPAgg(cfg *Config) *httpAgg {
	return &httpAgg{maxKeys: 4 * cfg.MaxTrackedPods, retention: cfg.Retention, now: time.Now, keys: map[httpKey]*httpStats{}}
}

func httpPod(ep *flowpb.Endpoint) (hubble.PodKey, bool) {
	if ep.GetPodName() == "" {
		return hubble.PodKey{}, false
	}
	return hubble.PodKey{Namespace: ep.GetNamespace(), Pod: ep.GetPodName()}, true
}

// observe counts one L7 HTTP flow (hubble.AggregatorConfig.OnHTTP).
func (a *httpAgg) observe(f *flowpb.Flow) {
	l7 := f.GetL7()
	h := l7.GetHttp()
	if h == nil {
		return
	}
	reply := l7.GetType() == flowpb.L7FlowType_RESPONSE
	if !reply && l7.GetType() != flowpb.L7FlowType_REQUEST {
		return
	}
	client, server := f.GetSource(), f.GetDestination()
	if reply {
		client, server = server, client
	}
	egress := f.GetTrafficDirection() == flowpb.TrafficDirection_EGRESS
	pk := httpPathKey{httpMethod(h.GetMethod()), httpPathTemplate(h.GetUrl())}
	var svc string
	if s := f.GetDestinationService(); !reply && s.GetName() != "" {
		svc = s.GetNamespace() + "/" + s.GetName()
	}
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, side := range []struct {
		ep     *flowpb.Endpoint
		client bool
	}{{server, false}, {client, true}} {
		pod, ok := httpPod(side.ep)
		if !ok {
			continue
		}
		st := a.stats(httpKey{pod, side.client, egress}, side.ep, f.GetNodeName(), now)
		if st == nil {
			continue
		}
		if svc != "" {
			st.service = svc
		}
		pc := st.paths[pk]
		if pc == nil {
			if len(st.paths) < httpMaxPathsPerRow {
				pc = &httpPathCount{}
				st.paths[pk] = pc
				st.pathOrder = append(st.pathOrder, pk)
			} else {
				pc = &st.other
			}
		}
		if !reply {
			st.requests++
			pc.requests++
			if f.GetVerdict() == flowpb.Verdict_DROPPED {
				st.denied++
			}
			continue
		}
		st.responses++
		code := h.GetCode()
		class := code / 100
		if class < 1 || class > 5 {
			class = 0
		}
		st.status[class]++
		switch class {
		case 4:
			pc.s4xx++
		case 5:
			pc.s5xx++
		}
		if ns := l7.GetLatencyNs(); ns > 0 {
			st.latency[uint16(topspec.HTTPLatencyBucket(ns))]++
		} else {
			st.noLatency++
		}
	}
}

func (a *httpAgg) stats(k httpKey, ep *flowpb.Endpoint, node string, now time.Time) *httpStats {
	st := a.keys[k]
	if st == nil {
		if len(a.keys) >= a.maxKeys {
			a.untracked++
			return nil
		}
		a.gen++
		st = &httpStats{gen: a.gen, latency: map[uint16]uint64{}, paths: map[httpPathKey]*httpPathCount{}}
		a.keys[k] = st
	}
	st.lastSeen = now
	st.changed = true
	if id := ep.GetIdentity(); id != 0 {
		st.identity = id
	}
	if w := ep.GetWorkloads(); len(w) > 0 {
		st.workload, st.workloadKind = w[0].GetName(), w[0].GetKind()
	}
	if l := ep.GetLabels(); len(l) > 0 && !slices.Equal(l, st.labels) {
		st.labels = slices.Clone(l)
	}
	if node != "" {
		st.node = node
	}
	return st
}

// snapshot copies every row (and forgets rows idle for the retention, at most every 10 s).
func (a *httpAgg) snapshot() (map[httpKey]*httpStats, uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gcLocked(a.now())
	out := make(map[httpKey]*httpStats, len(a.keys))
	for k, st := range a.keys {
		out[k] = st.clone()
	}
	return out, a.untracked
}

// gcLocked forgets rows idle for the retention (their history with them), at most every 10 s.
// Callers hold a.mu.
func (a *httpAgg) gcLocked(now time.Time) {
	if now.Sub(a.lastGC) <= 10*time.Second {
		return
	}
	a.lastGC = now
	for k, st := range a.keys {
		if now.Sub(st.lastSeen) > a.retention {
			delete(a.keys, k)
		}
	}
}

// httpQuery is one top http stream's request, checked.
type httpQuery struct {
	req      *isoobsv1.TopRequest
	ns       string
	selector labels.Selector
	since    time.Time
	baseline map[httpKey]*httpStats // since-stream-start totals
}

func newHTTPQuery(req *isoobsv1.TopRequest, limitNS string) (*httpQuery, error) {
	q := &httpQuery{req: req, ns: req.GetNamespace(), selector: labels.Everything()}
	if limitNS != "" {
		q.ns = limitNS
	}
	if s := strings.TrimSpace(req.GetLabelSelector()); s != "" {
		sel, err := labels.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("label selector %q: %v", s, err)
		}
		q.selector = sel
	}
	return q, nil
}

func (q *httpQuery) matches(k httpKey, st *httpStats) bool {
	if k.client != q.req.GetHttpClients() {
		return false
	}
	if q.ns != "" && k.pod.Namespace != q.ns {
		return false
	}
	if p := q.req.GetPod(); p != "" && k.pod.Pod != p && k.pod.String() != p {
		return false
	}
	return q.selector.Empty() || q.selector.Matches(labels.Set(hubble.LabelMap(st.labels)))
}

// httpRow builds a row from cur minus base (nil: nothing to subtract), rates from cur minus prev
// over seconds.
func httpRow(k httpKey, cur, base, prev *httpStats, seconds float64) *isoobsv1.HTTPRow {
	if base != nil && base.gen != cur.gen {
		base = nil
	}
	if prev != nil && prev.gen != cur.gen {
		prev = nil
	}
	sub := func(v uint64, b *httpStats, get func(*httpStats) uint64) uint64 {
		if b == nil {
			return v
		}
		return v - get(b)
	}
	get := func(f func(*httpStats) uint64) uint64 { return sub(f(cur), base, f) }
	rate := func(f func(*httpStats) uint64) float64 {
		if seconds <= 0 {
			return 0
		}
		return float64(sub(f(cur), prev, f)) / seconds
	}
	req := func(s *httpStats) uint64 { return s.requests }
	s4 := func(s *httpStats) uint64 { return s.status[4] }
	s5 := func(s *httpStats) uint64 { return s.status[5] }
	dir := "ingress"
	if k.egress {
		dir = "egress"
	}
	r := &isoobsv1.HTTPRow{
		Node: cur.node, Namespace: k.pod.Namespace, Pod: k.pod.Pod, Workload: cur.workload, WorkloadKind: cur.workloadKind,
		Labels: hubble.LabelMap(cur.labels), Identity: cur.identity, Service: cur.service, Client: k.client, Direction: dir,
		Requests:                get(req),
		Responses:               get(func(s *httpStats) uint64 { return s.responses }),
		Status_1Xx:              get(func(s *httpStats) uint64 { return s.status[1] }),
		Status_2Xx:              get(func(s *httpStats) uint64 { return s.status[2] }),
		Status_3Xx:              get(func(s *httpStats) uint64 { return s.status[3] }),
		Status_4Xx:              get(s4),
		Status_5Xx:              get(s5),
		StatusOther:             get(func(s *httpStats) uint64 { return s.status[0] }),
		Denied:                  get(func(s *httpStats) uint64 { return s.denied }),
		ResponsesWithoutLatency: get(func(s *httpStats) uint64 { return s.noLatency }),
		RequestsPerSecond:       rate(req),
		Status_4XxPerSecond:     rate(s4),
		Status_5XxPerSecond:     rate(s5),
	}
	dense := make([]uint64, topspec.HTTPLatencyBuckets)
	for b, n := range cur.latency {
		if base != nil {
			n -= base.latency[b]
		}
		if n > 0 && int(b) < len(dense) {
			dense[b] = n
		}
	}
	for b, n := range dense {
		if n > 0 {
			r.LatencyBuckets = append(r.LatencyBuckets, uint32(b))
			r.LatencyCounts = append(r.LatencyCounts, n)
		}
	}
	r.LatencyP50Ms = topspec.HTTPLatencyQuantileDense(dense, 0.50)
	r.LatencyP95Ms = topspec.HTTPLatencyQuantileDense(dense, 0.95)
	r.LatencyP99Ms = topspec.HTTPLatencyQuantileDense(dense, 0.99)
	for pk, pc := range cur.paths {
		c := *pc
		if base != nil {
			if b := base.paths[pk]; b != nil {
				c.requests, c.s4xx, c.s5xx = c.requests-b.requests, c.s4xx-b.s4xx, c.s5xx-b.s5xx
			}
		}
		if c.requests+c.s4xx+c.s5xx == 0 {
			continue
		}
		r.Paths = append(r.Paths, &isoobsv1.HTTPPathCount{Method: pk.method, Path: pk.path, Requests: c.requests, Status_4Xx: c.s4xx, Status_5Xx: c.s5xx})
	}
	slices.SortFunc(r.Paths, func(a, b *isoobsv1.HTTPPathCount) int {
		if c := cmp.Compare(b.Requests, a.Requests); c != 0 {
			return c
		}
		return strings.Compare(a.Method+" "+a.Path, b.Method+" "+b.Path)
	})
	o := cur.other
	if base != nil {
		o.requests, o.s4xx, o.s5xx = o.requests-base.other.requests, o.s4xx-base.other.s4xx, o.s5xx-base.other.s5xx
	}
	if o.requests+o.s4xx+o.s5xx > 0 {
		r.PathsOther = &isoobsv1.HTTPPathCount{Method: "*", Path: "other", Requests: o.requests, Status_4Xx: o.s4xx, Status_5Xx: o.s5xx}
	}
	return r
}

// httpFrame is one frame of a top http stream.
func (d *Daemon) httpFrame(q *httpQuery, cur, prev map[httpKey]*httpStats, untracked uint64, now time.Time, seconds float64) *isoobsv1.TopFrame {
	f := &isoobsv1.TopFrame{Node: d.cfg.NodeName, Time: timestamppb.New(now), Since: timestamppb.New(q.since),
		Interval: durationpb.New(time.Duration(seconds * float64(time.Second)))}
	keys := slices.Collect(maps.Keys(cur))
	slices.SortFunc(keys, func(a, b httpKey) int { return strings.Compare(a.pod.String(), b.pod.String()) })
	for _, k := range keys {
		st := cur[k]
		if !q.matches(k, st) {
			continue
		}
		r := httpRow(k, st, q.baseline[k], prev[k], seconds)
		if r.Requests+r.Responses == 0 {
			continue
		}
		f.HttpRows = append(f.HttpRows, r)
	}
	d.httpWarnings(f, untracked)
	return f
}

// httpLookBackFrame is a frame of a --since stream: the rows' counts over the last lookBack
// of their history, ending at the collector's latest tick.
func (d *Daemon) httpLookBackFrame(q *httpQuery, lookBack time.Duration) *isoobsv1.TopFrame {
	c := d.coll
	c.mu.RLock()
	lb := d.httpCounts().lookBack(c.clock, lookBack, q)
	c.mu.RUnlock()
	f := &isoobsv1.TopFrame{Node: d.cfg.NodeName, Time: timestamppb.New(lb.to), Since: timestamppb.New(lb.from),
		Interval: durationpb.New(lb.elapsed), HttpRows: lb.rows}
	switch {
	case !lb.ok:
		f.Time, f.Since = timestamppb.Now(), timestamppb.New(c.started)
		f.Warnings = append(f.Warnings, "look-back needs two collector ticks of history; counting started "+c.started.Format(time.RFC3339))
	case lb.elapsed < lookBack-c.cfg.Interval:
		f.Warnings = append(f.Warnings, fmt.Sprintf("look-back: history covers %s of the %s asked (this daemon counts since %s)",
			lb.elapsed.Round(time.Second), lookBack, c.started.UTC().Format(time.RFC3339)))
	}
	d.httpWarnings(f, lb.untracked)
	return f
}

// httpWarnings adds what a top http frame cannot count: Hubble down, rows past the bound, lost
// events.
func (d *Daemon) httpWarnings(f *isoobsv1.TopFrame, untracked uint64) {
	h := d.coll.hub
	if st := h.client.Status(); !st.Connected {
		why := st.LastError
		if why == "" {
			why = "not connected yet"
		}
		f.Warnings = append(f.Warnings, fmt.Sprintf("Hubble (%s) is not connected: %s; HTTP counts stop while it is down", st.Server, why))
	}
	if untracked > 0 {
		f.Warnings = append(f.Warnings, fmt.Sprintf("%d HTTP records of pods past this daemon's %d rows were not counted (raise --max-tracked-pods)", untracked, d.httpCounts().maxKeys))
	}
	if lost := h.agg.Counters().LostEvents; lost > 0 {
		f.Warnings = append(f.Warnings, fmt.Sprintf("Hubble reported %d events lost since this daemon started: HTTP counts may be low", lost))
	}
}

func (d *Daemon) httpCounts() *httpAgg {
	if d.coll.hub == nil {
		return nil
	}
	return d.coll.hub.http
}

// topHTTP serves a DIMENSION_HTTP Top stream: per-pod rows (grouping, sorting and the limit
// are the plugin's, after it merged every node), one frame per request interval.
func (s *server) topHTTP(req *isoobsv1.TopRequest, stream isoobsv1.Daemon_TopServer, limitNS string) error {
	d := s.d
	a := d.httpCounts()
	if a == nil {
		return status.Error(codes.Unavailable, "this daemon runs without Hubble (--hubble-server=off): top http counts Hubble's L7 HTTP flows")
	}
	c := d.coll
	if err := checkTopBounds(req, c.cfg.Retention); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	var lookBack time.Duration
	if d := req.GetSince(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() <= 0 {
			return status.Errorf(codes.InvalidArgument, "since %v: give a positive look-back such as 5m", d.AsDuration())
		}
		if req.GetSinceStreamStart() {
			return status.Error(codes.InvalidArgument, "since looks back over the daemon's history; since_stream_start counts from now on: ask for one of them")
		}
		lookBack = d.AsDuration()
	}
	q, err := newHTTPQuery(req, limitNS)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	every := frameTicks(req, c.cfg.Interval)
	ticks, ok := c.subscribeAtMost(maxTopStreams)
	if !ok {
		return status.Errorf(codes.ResourceExhausted, "this daemon serves at most %d top streams at once and all are open; close other views of this node, or retry", maxTopStreams)
	}
	defer c.unsubscribe(ticks)
	prev, _ := a.snapshot()
	prevAt := a.now()
	q.since = c.started
	if req.GetSinceStreamStart() {
		q.baseline, q.since = prev, prevAt
	}
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
		var f *isoobsv1.TopFrame
		if lookBack > 0 {
			f = d.httpLookBackFrame(q, lookBack)
		} else {
			cur, untracked := a.snapshot()
			now := a.now()
			f = d.httpFrame(q, cur, prev, untracked, now, now.Sub(prevAt).Seconds())
			prev, prevAt = cur, now
		}
		if limitNS != "" {
			f.Warnings = append(f.Warnings, "tenant authorization: limited to namespace "+limitNS)
		}
		if err := stream.Send(f); err != nil {
			return err
		}
	}
}
