package top

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/topspec"
)

// GroupByService groups top http rows by the Service the requests were sent to.
const GroupByService = "service"

// HTTPGroupBys lists the groupings `top http --group-by` accepts.
var HTTPGroupBys = []string{GroupByPod, GroupByWorkload, GroupByService, GroupByNamespace, GroupByNode}

// HTTP sort keys, the default first. All but name sort descending: the rate first, then the total.
const (
	HTTPSortRequests = "rps"
	HTTPSortErrors   = "errors" // 5xx/s, then 4xx/s
	HTTPSort5xx      = "5xx"
	HTTPSort4xx      = "4xx"
	HTTPSortLatency  = "latency" // p99, then p50
	HTTPSortName     = "name"
)

// HTTPSortKeys lists the sort keys of `top http`, the default first.
var HTTPSortKeys = []string{HTTPSortRequests, HTTPSortErrors, HTTPSort5xx, HTTPSort4xx, HTTPSortLatency, HTTPSortName}

// HTTPMaxPaths bounds the path templates a merged row keeps; the rest add to its "other".
const HTTPMaxPaths = 32

// ParseHTTPSort checks a `top http --sort` value.
func ParseHTTPSort(s string) (string, error) {
	key := strings.ToLower(strings.TrimSpace(s))
	if slices.Contains(HTTPSortKeys, key) {
		return key, nil
	}
	return "", fmt.Errorf("invalid --sort %q: valid keys are %s (e.g. --sort errors)", s, strings.Join(HTTPSortKeys, ", "))
}

// ParseHTTPGroupBy checks a `top http --group-by` value.
func ParseHTTPGroupBy(s string) (string, error) {
	key := strings.ToLower(strings.TrimSpace(s))
	if slices.Contains(HTTPGroupBys, key) {
		return key, nil
	}
	return "", fmt.Errorf("invalid --group-by %q: valid values are %s (e.g. --group-by service)", s, strings.Join(HTTPGroupBys, ", "))
}

// HTTPFrame is one merged view of HTTP golden signals, printed by every output format of
// `top http` (a stable JSON/YAML schema like TCPFrame's).
type HTTPFrame struct {
	Time            time.Time `json:"time"`
	Since           time.Time `json:"since"`
	IntervalSeconds float64   `json:"intervalSeconds"`
	// LookBackSeconds is --since: counters cover the daemons' history over [Since, Time] and
	// rates are their average over it (0: counting since the daemons started, or --duration).
	LookBackSeconds float64       `json:"lookBackSeconds,omitempty"`
	Nodes           []string      `json:"nodes"`
	MissingNodes    []MissingNode `json:"missingNodes"`
	StaleNodes      []StaleNode   `json:"staleNodes"`
	GroupBy         string        `json:"groupBy"`
	Sort            string        `json:"sort"`
	// Side is "server" (rows are the pods that served the requests) or "client".
	Side string    `json:"side"`
	Rows []HTTPRow `json:"rows"`
	// Total covers every row, including rows cut by --limit.
	Total     HTTPRow `json:"total"`
	Truncated int     `json:"truncated"`
	// L7Visibility says, per namespace in view, which pods an L7 HTTP policy selects (Hubble
	// has HTTP flows only for those); nil when the Kubernetes API was not asked.
	L7Visibility []L7Namespace `json:"l7Visibility,omitempty"`
	Warnings     []string      `json:"warnings"`
}

// L7Namespace is one namespace's L7 HTTP visibility.
type L7Namespace struct {
	Namespace string `json:"namespace"`
	// Pods running (host-network pods apart) and those an L7 HTTP policy selects.
	Pods         int      `json:"pods"`
	VisiblePods  int      `json:"visiblePods"`
	Policies     []string `json:"policies"`
	UnseenGroups []string `json:"unseenWorkloads,omitempty"`
}

// HTTPRow is the HTTP requests of one group (a pod, workload, service, namespace or node):
// counters over [Since, Time], rates over the frame's interval.
type HTTPRow struct {
	Node         string            `json:"node"`
	Namespace    string            `json:"namespace"`
	Pod          string            `json:"pod"`
	Workload     string            `json:"workload"`
	WorkloadKind string            `json:"workloadKind"`
	Service      string            `json:"service"`
	Identity     uint32            `json:"identity"`
	Pods         uint32            `json:"pods"`
	Labels       map[string]string `json:"labels,omitempty"`
	// Direction is where Cilium's proxy saw the requests: ingress, egress, or "" when mixed.
	Direction string `json:"direction"`

	Requests                uint64  `json:"requests"`
	Responses               uint64  `json:"responses"`
	Status1xx               uint64  `json:"status1xx"`
	Status2xx               uint64  `json:"status2xx"`
	Status3xx               uint64  `json:"status3xx"`
	Status4xx               uint64  `json:"status4xx"`
	Status5xx               uint64  `json:"status5xx"`
	StatusOther             uint64  `json:"statusOther"`
	Denied                  uint64  `json:"denied"`
	ResponsesWithoutLatency uint64  `json:"responsesWithoutLatency"`
	RequestsPerSecond       float64 `json:"requestsPerSecond"`
	Status4xxPerSecond      float64 `json:"status4xxPerSecond"`
	Status5xxPerSecond      float64 `json:"status5xxPerSecond"`
	LatencyP50Ms            float64 `json:"latencyP50Ms"`
	LatencyP95Ms            float64 `json:"latencyP95Ms"`
	LatencyP99Ms            float64 `json:"latencyP99Ms"`
	// Paths are method + path templates, most requests first, at most HTTPMaxPaths; the rest
	// are counted in PathsOther.
	Paths      []HTTPPath `json:"paths"`
	PathsOther HTTPPath   `json:"pathsOther"`
	// FirstSeen and LastSeen (--since only) are when the row's requests started and ended
	// within the look-back, to the resolution of the daemons' history (their interval for the
	// last minute, 10 s before): the earliest and latest over its pods and nodes.
	FirstSeen *time.Time `json:"firstSeen,omitempty"`
	LastSeen  *time.Time `json:"lastSeen,omitempty"`

	latency []uint64 // dense topspec.HTTPLatencyBucket histogram: merges exactly
	pods    map[string]bool
	pathIdx map[[2]string]int // Paths by method, path
}

// HTTPPath is one method + path template's requests and error responses.
type HTTPPath struct {
	Method    string `json:"method"`
	Path      string `json:"path"`
	Requests  uint64 `json:"requests"`
	Status4xx uint64 `json:"status4xx"`
	Status5xx uint64 `json:"status5xx"`
}

// ErrorPercent is the share of responses that were 5xx, in percent.
func (r *HTTPRow) ErrorPercent() float64 {
	if r.Responses == 0 {
		return 0
	}
	return 100 * float64(r.Status5xx) / float64(r.Responses)
}

// DisplayName is the row's identity under groupBy.
func (r *HTTPRow) DisplayName(groupBy string) string {
	switch groupBy {
	case GroupByWorkload:
		if r.Workload == "" {
			return r.Namespace + "/" + r.Pod
		}
		return r.Namespace + "/" + r.Workload
	case GroupByService:
		return r.Service
	case GroupByNamespace:
		return r.Namespace
	case GroupByNode:
		return r.Node
	default:
		return r.Namespace + "/" + r.Pod
	}
}

func httpRowFromProto(p *isoobsv1.HTTPRow) HTTPRow {
	r := HTTPRow{
		Node: p.Node, Namespace: p.Namespace, Pod: p.Pod, Workload: p.Workload, WorkloadKind: p.WorkloadKind,
		Service: p.Service, Identity: p.Identity, Pods: 1, Labels: p.Labels, Direction: p.Direction,
		Requests: p.Requests, Responses: p.Responses,
		Status1xx: p.Status_1Xx, Status2xx: p.Status_2Xx, Status3xx: p.Status_3Xx, Status4xx: p.Status_4Xx, Status5xx: p.Status_5Xx,
		StatusOther: p.StatusOther, Denied: p.Denied, ResponsesWithoutLatency: p.ResponsesWithoutLatency,
		RequestsPerSecond: p.RequestsPerSecond, Status4xxPerSecond: p.Status_4XxPerSecond, Status5xxPerSecond: p.Status_5XxPerSecond,
		latency: make([]uint64, topspec.HTTPLatencyBuckets),
		pods:    map[string]bool{p.Namespace + "/" + p.Pod: true},
	}
	for i, b := range p.LatencyBuckets {
		if int(b) < len(r.latency) && i < len(p.LatencyCounts) {
			r.latency[b] += p.LatencyCounts[i]
		}
	}
	for _, x := range p.Paths {
		r.Paths = append(r.Paths, HTTPPath{Method: x.Method, Path: x.Path, Requests: x.Requests, Status4xx: x.Status_4Xx, Status5xx: x.Status_5Xx})
	}
	if o := p.PathsOther; o != nil {
		r.PathsOther = HTTPPath{Method: o.Method, Path: o.Path, Requests: o.Requests, Status4xx: o.Status_4Xx, Status5xx: o.Status_5Xx}
	}
	if ts := p.GetFirstSeen(); ts != nil {
		t := ts.AsTime()
		r.FirstSeen = &t
	}
	if ts := p.GetLastSeen(); ts != nil {
		t := ts.AsTime()
		r.LastSeen = &t
	}
	r.finish()
	return r
}

// add merges o into r: counters, rates, latency histograms and paths add; identity fields that
// differ are cleared.
func (r *HTTPRow) add(o *HTTPRow) {
	if r.latency == nil {
		*r = HTTPRow{Node: o.Node, Namespace: o.Namespace, Pod: o.Pod, Workload: o.Workload, WorkloadKind: o.WorkloadKind,
			Service: o.Service, Identity: o.Identity, Labels: o.Labels, Direction: o.Direction,
			latency: make([]uint64, topspec.HTTPLatencyBuckets), pods: map[string]bool{}}
	}
	for p := range o.pods {
		r.pods[p] = true
	}
	r.Pods = uint32(len(r.pods))
	r.Requests += o.Requests
	r.Responses += o.Responses
	r.Status1xx += o.Status1xx
	r.Status2xx += o.Status2xx
	r.Status3xx += o.Status3xx
	r.Status4xx += o.Status4xx
	r.Status5xx += o.Status5xx
	r.StatusOther += o.StatusOther
	r.Denied += o.Denied
	r.ResponsesWithoutLatency += o.ResponsesWithoutLatency
	r.RequestsPerSecond += o.RequestsPerSecond
	r.Status4xxPerSecond += o.Status4xxPerSecond
	r.Status5xxPerSecond += o.Status5xxPerSecond
	for i, n := range o.latency {
		r.latency[i] += n
	}
	if r.pathIdx == nil {
		r.pathIdx = make(map[[2]string]int, len(r.Paths))
		for i, p := range r.Paths {
			r.pathIdx[[2]string{p.Method, p.Path}] = i
		}
	}
	for _, p := range o.Paths {
		k := [2]string{p.Method, p.Path}
		i, ok := r.pathIdx[k]
		if !ok {
			r.pathIdx[k] = len(r.Paths)
			r.Paths = append(r.Paths, p)
			continue
		}
		r.Paths[i].Requests += p.Requests
		r.Paths[i].Status4xx += p.Status4xx
		r.Paths[i].Status5xx += p.Status5xx
	}
	r.PathsOther.Requests += o.PathsOther.Requests
	r.PathsOther.Status4xx += o.PathsOther.Status4xx
	r.PathsOther.Status5xx += o.PathsOther.Status5xx
	if o.FirstSeen != nil && (r.FirstSeen == nil || o.FirstSeen.Before(*r.FirstSeen)) {
		t := *o.FirstSeen
		r.FirstSeen = &t
	}
	if o.LastSeen != nil && (r.LastSeen == nil || o.LastSeen.After(*r.LastSeen)) {
		t := *o.LastSeen
		r.LastSeen = &t
	}
	if r.Node != o.Node {
		r.Node = ""
	}
	if r.Pod != o.Pod {
		r.Pod, r.Labels, r.Identity = "", nil, 0
	}
	if r.Workload != o.Workload || r.WorkloadKind != o.WorkloadKind {
		r.Workload, r.WorkloadKind = "", ""
	}
	if r.Service != o.Service {
		r.Service = ""
	}
	if r.Namespace != o.Namespace {
		r.Namespace = ""
	}
	if r.Direction != o.Direction {
		r.Direction = ""
	}
}

// finish computes the percentiles, sorts the paths (most requests first) and bounds them: at
// most HTTPMaxPaths, the rest into PathsOther.
func (r *HTTPRow) finish() {
	r.pathIdx = nil
	r.LatencyP50Ms = topspec.HTTPLatencyQuantileDense(r.latency, 0.50)
	r.LatencyP95Ms = topspec.HTTPLatencyQuantileDense(r.latency, 0.95)
	r.LatencyP99Ms = topspec.HTTPLatencyQuantileDense(r.latency, 0.99)
	slices.SortFunc(r.Paths, func(a, b HTTPPath) int {
		if c := cmp.Compare(b.Requests, a.Requests); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Status5xx+b.Status4xx, a.Status5xx+a.Status4xx); c != 0 {
			return c
		}
		return strings.Compare(a.Method+" "+a.Path, b.Method+" "+b.Path)
	})
	if len(r.Paths) > HTTPMaxPaths {
		for _, p := range r.Paths[HTTPMaxPaths:] {
			r.PathsOther.Requests += p.Requests
			r.PathsOther.Status4xx += p.Status4xx
			r.PathsOther.Status5xx += p.Status5xx
		}
		r.Paths = r.Paths[:HTTPMaxPaths]
	}
	if r.PathsOther.Requests+r.PathsOther.Status4xx+r.PathsOther.Status5xx > 0 {
		r.PathsOther.Method, r.PathsOther.Path = "*", "other"
	}
}

func httpGroupKey(groupBy string, r *HTTPRow) string {
	switch groupBy {
	case GroupByWorkload:
		if r.Workload == "" {
			return r.Namespace + "//" + r.Pod
		}
		return r.Namespace + "/" + r.WorkloadKind + "/" + r.Workload
	case GroupByService:
		return r.Service
	case GroupByNamespace:
		return r.Namespace
	case GroupByNode:
		return r.Node
	default:
		return r.Namespace + "/" + r.Pod
	}
}

// ServiceOf names the Services whose selectors match a pod's labels ("namespace/name", several
// comma-separated), "" for none; top http uses it for server rows Hubble named no Service for.
type ServiceOf func(namespace string, labels map[string]string) string

// MergeHTTP merges the latest HTTP frames of several daemons: the rows of one pod add across
// nodes; a request both proxies logged (an egress policy on the client, an ingress one on the
// server) counts once, as each pod's rows of its preferred observation point are kept (ingress
// for servers, egress for clients) when it has any; then rows are grouped. Rows are unsorted.
func MergeHTTP(frames []*isoobsv1.TopFrame, groupBy string, clients bool, services ServiceOf) HTTPFrame {
	out := HTTPFrame{GroupBy: groupBy, Side: "server", Rows: []HTTPRow{}}
	if clients {
		out.Side = "client"
	}
	prefer := "ingress"
	if clients {
		prefer = "egress"
	}
	type podDir struct{ pod, dir string }
	perPod := map[podDir]*HTTPRow{}
	var order []podDir
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
		for _, w := range f.Warnings {
			out.Warnings = append(out.Warnings, f.Node+": "+w)
		}
		for _, p := range f.HttpRows {
			if p.Client != clients {
				continue
			}
			r := httpRowFromProto(p)
			if r.Service == "" && !clients && services != nil {
				r.Service = services(r.Namespace, r.Labels)
			}
			k := podDir{p.Namespace + "/" + p.Pod, p.Direction}
			if have := perPod[k]; have != nil {
				have.add(&r)
				continue
			}
			perPod[k] = &r
			order = append(order, k)
		}
	}
	byKey := map[string]int{}
	for _, k := range order {
		if k.dir != prefer {
			if _, ok := perPod[podDir{k.pod, prefer}]; ok {
				continue // the same requests, seen at the preferred point too
			}
		}
		r := perPod[k]
		out.Total.add(r)
		gk := httpGroupKey(groupBy, r)
		if i, ok := byKey[gk]; ok {
			out.Rows[i].add(r)
			continue
		}
		byKey[gk] = len(out.Rows)
		var g HTTPRow
		g.add(r)
		out.Rows = append(out.Rows, g)
	}
	for i := range out.Rows {
		out.Rows[i].finish()
	}
	out.Total.finish()
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

func httpSortValues(key string, r *HTTPRow) (rate, total float64) {
	switch key {
	case HTTPSortErrors:
		return r.Status5xxPerSecond*1e6 + r.Status4xxPerSecond, float64(r.Status5xx)*1e6 + float64(r.Status4xx)
	case HTTPSort5xx:
		return r.Status5xxPerSecond, float64(r.Status5xx)
	case HTTPSort4xx:
		return r.Status4xxPerSecond, float64(r.Status4xx)
	case HTTPSortLatency:
		return r.LatencyP99Ms, r.LatencyP50Ms
	default:
		return r.RequestsPerSecond, float64(r.Requests)
	}
}

// SortedLimited returns f with rows sorted by key (heaviest first) and cut to limit (0: all).
func (f HTTPFrame) SortedLimited(key string, limit int) HTTPFrame {
	var values func(*HTTPRow) (float64, float64)
	if key != HTTPSortName {
		values = func(r *HTTPRow) (float64, float64) { return httpSortValues(key, r) }
	}
	rows, cut := sortLimit(f.Rows, values, func(r *HTTPRow) string { return r.DisplayName(f.GroupBy) + "/" + r.Node }, limit)
	f.Sort, f.Truncated = key, f.Truncated+cut
	f.Rows = rows
	return f
}

func (f *fanIn) mergeHTTP(groupBy string, clients bool, services ServiceOf) (HTTPFrame, bool) {
	frames, stale := f.latestFrames()
	if len(frames) == 0 {
		return HTTPFrame{}, false
	}
	frame := MergeHTTP(frames, groupBy, clients, services)
	frame.Warnings = append(frame.Warnings, f.mergeWarnings(stale)...)
	frame.MissingNodes = append(frame.MissingNodes, f.missing...)
	frame.StaleNodes = append(frame.StaleNodes, stale...)
	return frame, true
}

// StreamHTTP is Stream for `top http`: one Top stream (DIMENSION_HTTP) per source, emit called
// with a merged HTTPFrame whenever every live source has sent a new frame (or MaxWait later).
func StreamHTTP(ctx context.Context, sources []Source, opts StreamOptions, groupBy string, clients bool, services ServiceOf, emit func(HTTPFrame) error) error {
	return streamMerged(ctx, sources, opts, func(f *fanIn) (HTTPFrame, bool) { return f.mergeHTTP(groupBy, clients, services) }, emit)
}
