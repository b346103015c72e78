package daemon

import (
	"math"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/isoobs/isoobs/bpf"
	"github.com/isoobs/isoobs/daemon/podmeta"
	"github.com/isoobs/isoobs/daemon/podresolver"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// fakeSource stands in for the kernel maps: cumulative per-cgroup counters and a name table
// drained on read.
type fakeSource struct {
	mu      sync.Mutex
	pods    map[uint64]bpf.PodCounters
	names   map[nameKey][2]uint64
	deleted []uint64
}

type nameKey struct {
	id   uint64
	name string
}

func newFakeSource() *fakeSource {
	return &fakeSource{pods: map[uint64]bpf.PodCounters{}, names: map[nameKey][2]uint64{}}
}

// query records n queries from cgroup id for name, all answered with rcode slot rc after
// latency lat.
func (f *fakeSource) query(id uint64, name string, n uint64, rc int, lat time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.pods[id]
	p.Queries += n
	p.Responses += n
	p.Rcode[rc] += n
	if p.QType == nil {
		p.QType = map[uint16]uint64{}
	}
	p.QType[1] += n
	us := lat.Microseconds()
	b := 0
	for us >= 2 && b < bpf.NumLatencyBuckets-1 {
		us >>= 1
		b++
	}
	p.LatencyLog2US[b] += n
	f.pods[id] = p
	k := nameKey{id, name}
	v := f.names[k]
	v[0] += n
	if rc == bpf.RcodeNXDomain {
		v[1] += n
	}
	f.names[k] = v
}

func (f *fakeSource) ReadPods() (map[uint64]bpf.PodCounters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[uint64]bpf.PodCounters, len(f.pods))
	for k, v := range f.pods {
		out[k] = v
	}
	return out, nil
}

func (f *fakeSource) DrainNames(fn func(uint64, string, uint64, uint64)) error {
	f.mu.Lock()
	names := f.names
	f.names = map[nameKey][2]uint64{}
	f.mu.Unlock()
	for k, v := range names {
		fn(k.id, k.name, v[0], v[1])
	}
	return nil
}

func (f *fakeSource) Stats() (bpf.ProbeStats, error) {
	return bpf.ProbeStats{Pods: bpf.MapFill{Entries: uint32(len(f.pods)), Max: 8192}}, nil
}

func (f *fakeSource) Attachments() []bpf.Attachment {
	return []bpf.Attachment{{Program: "dns_egress", Hook: "cgroup_skb/egress", Target: "/fake"}, {Program: "dns_ingress", Hook: "cgroup_skb/ingress", Target: "/fake"}}
}

func (f *fakeSource) Close() error { return nil }

func (f *fakeSource) DeletePods(ids []uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		delete(f.pods, id)
	}
	f.deleted = append(f.deleted, ids...)
	return nil
}

// fakeResolver maps ids to paths; paths are parsed with the real parser.
type fakeResolver struct {
	paths map[uint64]string
	gone  map[uint64]bool
}

func (r *fakeResolver) Resolve(id uint64) (podresolver.Cgroup, bool) {
	p, ok := r.paths[id]
	if !ok || r.gone[id] {
		return podresolver.Cgroup{}, false
	}
	c := podresolver.Cgroup{ID: id, Path: p}
	if pc, ok := podresolver.ParsePodCgroup(p); ok {
		c.Pod = &pc
	}
	return c, true
}
func (r *fakeResolver) Exists(id uint64) bool { _, ok := r.paths[id]; return ok && !r.gone[id] }
func (r *fakeResolver) Forget(id uint64)      { delete(r.paths, id) }

type fakePods map[string]podmeta.Pod

func (f fakePods) Lookup(uid string) (podmeta.Pod, bool) { p, ok := f[uid]; return p, ok }

const (
	uidCrawler  = "11111111-1111-4111-8111-111111111111"
	uidCrawler2 = "22222222-2222-4222-8222-222222222222"
	uidAPI      = "33333333-3333-4333-8333-333333333333"
	uidNoMeta   = "44444444-4444-4444-8444-444444444444"
)

func systemdPod(uid string) string {
	return "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + strings.ReplaceAll(uid, "-", "_") + ".slice"
}

type fixture struct {
	src  *fakeSource
	res  *fakeResolver
	c    *collector
	cfg  *Config
	now  time.Time
	meta fakePods
}

func newFixture(t testing.TB, mod func(*Config)) *fixture {
	cfg := &Config{NodeName: "node-a", Interval: time.Second}
	if mod != nil {
		mod(cfg)
	}
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	f := &fixture{src: newFakeSource(), cfg: cfg, now: time.Unix(1_700_000_000, 0)}
	f.res = &fakeResolver{gone: map[uint64]bool{}, paths: map[uint64]string{
		101: systemdPod(uidCrawler) + "/cri-containerd-aaa.scope",
		102: systemdPod(uidCrawler) + "/cri-containerd-bbb.scope", // second container of the same pod
		201: systemdPod(uidCrawler2) + "/cri-containerd-ccc.scope",
		301: "/kubepods/burstable/pod" + uidAPI + "/ddd",
		401: systemdPod(uidNoMeta),
		900: "/system.slice/chronyd.service",
	}}
	f.meta = fakePods{
		uidCrawler:  {UID: uidCrawler, Name: "crawler-7d9f-a", Namespace: "tenant-jobs", Labels: map[string]string{"app": "crawler"}, Workload: "crawler", WorkloadKind: "Deployment"},
		uidCrawler2: {UID: uidCrawler2, Name: "crawler-7d9f-b", Namespace: "tenant-jobs", Labels: map[string]string{"app": "crawler"}, Workload: "crawler", WorkloadKind: "Deployment"},
		uidAPI:      {UID: uidAPI, Name: "coreapi-0", Namespace: "tenant-api", Labels: map[string]string{"app": "coreapi"}, Workload: "coreapi", WorkloadKind: "StatefulSet"},
	}
	m := newMetrics()
	f.c = newCollector(cfg, f.src, f.res, f.meta, m, f.now)
	m.c = f.c
	return f
}

// step advances one second and ticks.
func (f *fixture) step() {
	f.now = f.now.Add(time.Second)
	f.c.tick(f.now)
}

func (f *fixture) frame(t testing.TB, req *isoobsv1.TopRequest) *isoobsv1.TopFrame {
	q, err := newTopQuery(req, f.cfg.Interval)
	if err != nil {
		t.Fatal(err)
	}
	return f.c.frame(q)
}

func rowByPod(fr *isoobsv1.TopFrame, pod string) *isoobsv1.DNSRow {
	for _, r := range fr.Rows {
		if r.Pod == pod || (r.Pod == "" && r.PodUid == pod) {
			return r
		}
	}
	return nil
}

func TestCollectorAttributionAndRates(t *testing.T) {
	f := newFixture(t, nil)
	f.c.tick(f.now) // start
	for i := range 30 {
		// crawler pod: 100 q/s over two containers, 10 of them NXDOMAIN, names spread.
		f.src.query(101, "api.example.com.", 60, bpf.RcodeNoError, 300*time.Microsecond)
		f.src.query(102, "nx.example.com.", 10, bpf.RcodeNXDomain, 3*time.Millisecond)
		f.src.query(102, "b.example.com.", 30, bpf.RcodeNoError, 300*time.Microsecond)
		// second crawler: 20 q/s, SERVFAIL
		f.src.query(201, "api.example.com.", 20, bpf.RcodeServFail, 20*time.Millisecond)
		// coreapi: 5 q/s for the last 10 seconds only
		if i >= 20 {
			f.src.query(301, "db.svc.cluster.local.", 5, bpf.RcodeNoError, 100*time.Microsecond)
		}
		// pod without metadata: 1 q/s; host: 7 q/s
		f.src.query(401, "x.", 1, bpf.RcodeRefused, time.Millisecond)
		f.src.query(900, "ntp.example.", 7, bpf.RcodeNoError, time.Millisecond)
		f.step()
	}

	fr := f.frame(t, &isoobsv1.TopRequest{Window: isoobsv1.Window_WINDOW_10S, TopNames: 3})
	if len(fr.Rows) != 4 {
		t.Fatalf("rows = %d, want 4 pods (host cgroup must not be a row): %v", len(fr.Rows), fr.Rows)
	}
	cr := rowByPod(fr, "crawler-7d9f-a")
	if cr == nil {
		t.Fatal("no crawler row")
	}
	if cr.Queries != 3000 || cr.Responses != 3000 || cr.Nxdomain != 300 || cr.Noerror != 2700 || cr.Namespace != "tenant-jobs" || cr.Workload != "crawler" || cr.PodUid != uidCrawler {
		t.Errorf("crawler row: %+v", cr)
	}
	if cr.Qps != 100 || cr.NxdomainRate != 10 || cr.ResponsesPerSecond != 100 {
		t.Errorf("crawler rates qps=%v nx=%v resp=%v, want 100 10 100", cr.Qps, cr.NxdomainRate, cr.ResponsesPerSecond)
	}
	if cr.QueriesByType["A"] != 3000 {
		t.Errorf("qtypes %v", cr.QueriesByType)
	}
	if len(cr.TopNames) != 3 || cr.TopNames[0].Name != "api.example.com." || cr.TopNames[0].Queries != 1800 || cr.TopNames[0].Error != 0 ||
		cr.TopNames[2].Name != "nx.example.com." || cr.TopNames[2].Nxdomain != 300 {
		t.Errorf("crawler top names %v", cr.TopNames)
	}
	// 2700 answers at 300µs (bucket 256..512) and 300 at 3ms: p50 in the first bucket, p99 in 2048..4096.
	if cr.LatencyP50Ms < 0.256 || cr.LatencyP50Ms >= 0.512 || cr.LatencyP99Ms < 2.048 || cr.LatencyP99Ms >= 4.096 {
		t.Errorf("latency p50 %v p99 %v", cr.LatencyP50Ms, cr.LatencyP99Ms)
	}
	var histTotal uint64
	for _, n := range cr.LatencyLog2Us {
		histTotal += n
	}
	if histTotal != 3000 {
		t.Errorf("histogram holds %d, want 3000", histTotal)
	}
	// Sorted by qps: crawler (100), crawler2 (20), coreapi (5), no-meta (1).
	if fr.Rows[0] != cr || fr.Rows[1].Pod != "crawler-7d9f-b" || fr.Rows[2].Pod != "coreapi-0" || fr.Rows[3].PodUid != uidNoMeta {
		t.Errorf("order: %s %s %s %s", fr.Rows[0].Pod, fr.Rows[1].Pod, fr.Rows[2].Pod, fr.Rows[3].PodUid)
	}
	api := fr.Rows[2]
	if api.Queries != 50 || api.Qps != 5 || api.Cgroup != "/kubepods/burstable/pod"+uidAPI {
		t.Errorf("coreapi row %+v", api)
	}
	nm := fr.Rows[3]
	if nm.Pod != "" || nm.Cgroup != systemdPod(uidNoMeta) || nm.Refused != 30 {
		t.Errorf("unresolved-metadata row %+v", nm)
	}
	// Totals: pods only (the host's 210 queries are counted in status, not here).
	if fr.Total.Queries != 3000+600+50+30 || fr.Total.Pods != 4 {
		t.Errorf("total %d over %d pods", fr.Total.Queries, fr.Total.Pods)
	}
	if len(fr.TopNames) != 3 || fr.TopNames[0].Name != "api.example.com." || fr.TopNames[0].Queries != 2400 {
		t.Errorf("frame top names %v", fr.TopNames)
	}
	if f.c.hostQueries != 210 {
		t.Errorf("host queries %d, want 210", f.c.hostQueries)
	}

	// Windows: coreapi had 5 q/s for 10 s out of 30: 1m window averages over the 30 s kept.
	fr = f.frame(t, &isoobsv1.TopRequest{Window: isoobsv1.Window_WINDOW_1M, Pod: "coreapi-0"})
	if len(fr.Rows) != 1 || math.Abs(fr.Rows[0].Qps-50.0/30) > 1e-9 {
		t.Errorf("1m coreapi qps %v", fr.Rows)
	}
	fr = f.frame(t, &isoobsv1.TopRequest{Window: isoobsv1.Window_WINDOW_1S, Pod: uidCrawler2})
	if len(fr.Rows) != 1 || fr.Rows[0].Qps != 20 || fr.Rows[0].ServfailRate != 20 {
		t.Errorf("1s crawler2 by uid %v", fr.Rows)
	}
}

func TestCollectorGroupingFiltersSort(t *testing.T) {
	f := newFixture(t, nil)
	f.c.tick(f.now)
	for range 5 {
		f.src.query(101, "a.", 10, bpf.RcodeNoError, time.Millisecond)
		f.src.query(201, "a.", 4, bpf.RcodeNXDomain, time.Millisecond)
		f.src.query(201, "b.", 1, bpf.RcodeNoError, time.Millisecond)
		f.src.query(301, "c.", 2, bpf.RcodeServFail, time.Millisecond)
		f.src.query(401, "d.", 1, bpf.RcodeNoError, time.Millisecond)
		f.step()
	}
	byWorkload := f.frame(t, &isoobsv1.TopRequest{GroupBy: isoobsv1.GroupBy_GROUP_BY_WORKLOAD, TopNames: 2})
	if len(byWorkload.Rows) != 3 {
		t.Fatalf("workload rows %d: %v", len(byWorkload.Rows), byWorkload.Rows)
	}
	w := byWorkload.Rows[0]
	if w.Workload != "crawler" || w.WorkloadKind != "Deployment" || w.Pods != 2 || w.Queries != 75 || w.Nxdomain != 20 || w.Qps != 15 || w.Pod != "" {
		t.Errorf("crawler workload row %+v", w)
	}
	if len(w.TopNames) != 2 || w.TopNames[0].Name != "a." || w.TopNames[0].Queries != 70 || w.TopNames[0].Nxdomain != 20 {
		t.Errorf("merged names %v", w.TopNames)
	}
	byNS := f.frame(t, &isoobsv1.TopRequest{GroupBy: isoobsv1.GroupBy_GROUP_BY_NAMESPACE})
	if len(byNS.Rows) != 3 || byNS.Rows[0].Namespace != "tenant-jobs" || byNS.Rows[0].Queries != 75 {
		t.Errorf("namespace rows %v", byNS.Rows)
	}
	byNode := f.frame(t, &isoobsv1.TopRequest{GroupBy: isoobsv1.GroupBy_GROUP_BY_NODE})
	if len(byNode.Rows) != 1 || byNode.Rows[0].Node != "node-a" || byNode.Rows[0].Queries != 75+10+5 || byNode.Rows[0].Pods != 4 {
		t.Errorf("node rows %v", byNode.Rows)
	}
	byName := f.frame(t, &isoobsv1.TopRequest{GroupBy: isoobsv1.GroupBy_GROUP_BY_QNAME, Sort: "queries"})
	if len(byName.Rows) != 4 || byName.Rows[0].Qname != "a." || byName.Rows[0].Queries != 70 || byName.Rows[0].Nxdomain != 20 || byName.Rows[0].Pods != 2 {
		t.Errorf("qname rows %v", byName.Rows)
	}
	// Filters.
	ns := f.frame(t, &isoobsv1.TopRequest{Namespace: "tenant-api"})
	if len(ns.Rows) != 1 || ns.Rows[0].Pod != "coreapi-0" || ns.Total.Queries != 10 {
		t.Errorf("namespace filter %v total %d", ns.Rows, ns.Total.Queries)
	}
	sel := f.frame(t, &isoobsv1.TopRequest{LabelSelector: "app in (crawler),app!=x"})
	if len(sel.Rows) != 2 {
		t.Errorf("label filter rows %d", len(sel.Rows))
	}
	// Sort and limit.
	bySF := f.frame(t, &isoobsv1.TopRequest{Sort: "servfail", Limit: 1})
	if len(bySF.Rows) != 1 || bySF.Rows[0].Pod != "coreapi-0" || bySF.Truncated != 3 || bySF.Total.Queries != 90 {
		t.Errorf("servfail sort %v truncated %d", bySF.Rows, bySF.Truncated)
	}
	byNX := f.frame(t, &isoobsv1.TopRequest{Sort: "nxdomain"})
	if byNX.Rows[0].Pod != "crawler-7d9f-b" {
		t.Errorf("nxdomain sort first %s", byNX.Rows[0].Pod)
	}
	byName2 := f.frame(t, &isoobsv1.TopRequest{Sort: "name"})
	var names []string
	for _, r := range byName2.Rows {
		names = append(names, r.Namespace+"/"+r.Pod)
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("name sort %v", names)
	}
}

func TestTopQueryValidation(t *testing.T) {
	for _, req := range []*isoobsv1.TopRequest{
		{Sort: "loudness"},
		{LabelSelector: "app in (("},
		{Dimension: isoobsv1.Dimension(7)},
		{GroupBy: isoobsv1.GroupBy(42)},
		{Interval: &durationpb.Duration{Seconds: -1}},
	} {
		if _, err := newTopQuery(req, time.Second); err == nil {
			t.Errorf("request %v accepted", req)
		}
	}
	q, err := newTopQuery(&isoobsv1.TopRequest{Interval: durationpb.New(3 * time.Second)}, time.Second)
	if err != nil || q.window != 3*time.Second || frameTicks(q.req, time.Second) != 3 {
		t.Errorf("interval 3s: %v %v", q, err)
	}
}

func TestSinceStreamStart(t *testing.T) {
	f := newFixture(t, nil)
	f.c.tick(f.now)
	for range 10 {
		f.src.query(101, "before.", 10, bpf.RcodeNoError, time.Millisecond)
		f.step()
	}
	q, err := newTopQuery(&isoobsv1.TopRequest{SinceStreamStart: true, TopNames: 5}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f.c.startStream(q)
	for range 4 {
		f.src.query(101, "after.", 3, bpf.RcodeNXDomain, time.Millisecond)
		f.src.query(301, "api.", 2, bpf.RcodeNoError, time.Millisecond)
		f.step()
	}
	fr := f.c.frame(q)
	cr := rowByPod(fr, "crawler-7d9f-a")
	if cr == nil || cr.Queries != 12 || cr.Nxdomain != 12 || len(cr.TopNames) != 1 || cr.TopNames[0].Name != "after." || cr.TopNames[0].Queries != 12 {
		t.Fatalf("since stream start crawler: %+v", cr)
	}
	if fr.Total.Queries != 20 || !fr.Since.AsTime().Equal(time.Unix(1_700_000_010, 0)) {
		t.Errorf("total %d since %v", fr.Total.Queries, fr.Since.AsTime())
	}
	var h uint64
	for _, n := range cr.LatencyLog2Us {
		h += n
	}
	if h != 12 {
		t.Errorf("latency histogram since stream start holds %d, want 12", h)
	}
	// The daemon-scope frame still has everything.
	all := f.frame(t, &isoobsv1.TopRequest{})
	if r := rowByPod(all, "crawler-7d9f-a"); r.Queries != 112 {
		t.Errorf("daemon scope %d", r.Queries)
	}
	f.c.removeSink(q.sink)
}

func TestKernelEntryResetAndGarbage(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Retention = 20 * time.Second })
	f.c.tick(f.now)
	f.src.query(101, "a.", 50, bpf.RcodeNoError, time.Millisecond)
	f.step()
	// The kernel entry is deleted and recreated (counters restart lower): the delta is the new value.
	f.src.mu.Lock()
	f.src.pods[101] = bpf.PodCounters{Queries: 5, Responses: 5}
	f.src.mu.Unlock()
	f.step()
	if got := f.c.subjects[uidCrawler].total.Queries; got != 55 {
		t.Fatalf("after reset total %d, want 55", got)
	}
	// Both cgroups of the crawler pod vanish; the pod stays visible for the retention window.
	f.src.query(102, "b.", 1, bpf.RcodeNoError, time.Millisecond)
	f.step()
	f.res.gone[101], f.res.gone[102] = true, true
	for range 10 { // a GC pass runs every 10 ticks
		f.step()
	}
	if _, ok := f.c.subjects[uidCrawler]; !ok {
		t.Fatal("pod forgotten before retention")
	}
	for range 30 {
		f.step()
	}
	if _, ok := f.c.subjects[uidCrawler]; ok {
		t.Fatal("pod not forgotten after retention")
	}
	if len(f.src.deleted) != 2 || f.c.cgroups[101] != nil {
		t.Errorf("kernel entries deleted %v", f.src.deleted)
	}
}

func TestTrackedPodLimit(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxTrackedPods = 2 })
	f.c.tick(f.now)
	f.src.query(101, "a.", 1, bpf.RcodeNoError, time.Millisecond)
	f.src.query(201, "a.", 1, bpf.RcodeNoError, time.Millisecond)
	f.step()
	f.src.query(301, "a.", 9, bpf.RcodeNoError, time.Millisecond)
	f.step()
	if len(f.c.subjects) != 2 || f.c.untrackedPods != 1 || f.c.untrackedQueries != 9 || f.c.droppedNameQueries != 9 {
		t.Errorf("subjects %d untracked pods %d queries %d names %d", len(f.c.subjects), f.c.untrackedPods, f.c.untrackedQueries, f.c.droppedNameQueries)
	}
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, nil)
	f.c.tick(f.now)
	f.src.query(101, "a.", 10, bpf.RcodeNoError, 300*time.Microsecond)
	f.src.query(201, "a.", 5, bpf.RcodeNXDomain, 300*time.Microsecond)
	f.src.query(401, "a.", 2, bpf.RcodeNoError, time.Millisecond)
	f.src.query(900, "a.", 100, bpf.RcodeNoError, time.Millisecond)
	f.step()
	f.src.query(101, "a.", 1, bpf.RcodeServFail, 300*time.Microsecond)
	f.step()
	expected := `
# HELP isoobs_dns_queries_total DNS queries sent by pods, per namespace and workload.
# TYPE isoobs_dns_queries_total counter
isoobs_dns_queries_total{namespace="tenant-jobs",workload="crawler"} 16
isoobs_dns_queries_total{namespace="unknown",workload="unknown"} 2
`
	if err := testutil.GatherAndCompare(f.c.metrics.reg, strings.NewReader(expected), "isoobs_dns_queries_total"); err != nil {
		t.Error(err)
	}
	expected = `
# HELP isoobs_dns_responses_total DNS responses received by pods, per namespace, workload and rcode.
# TYPE isoobs_dns_responses_total counter
isoobs_dns_responses_total{namespace="tenant-jobs",rcode="NOERROR",workload="crawler"} 10
isoobs_dns_responses_total{namespace="tenant-jobs",rcode="NXDOMAIN",workload="crawler"} 5
isoobs_dns_responses_total{namespace="tenant-jobs",rcode="OTHER",workload="crawler"} 0
isoobs_dns_responses_total{namespace="tenant-jobs",rcode="REFUSED",workload="crawler"} 0
isoobs_dns_responses_total{namespace="tenant-jobs",rcode="SERVFAIL",workload="crawler"} 1
isoobs_dns_responses_total{namespace="unknown",rcode="NOERROR",workload="unknown"} 2
isoobs_dns_responses_total{namespace="unknown",rcode="NXDOMAIN",workload="unknown"} 0
isoobs_dns_responses_total{namespace="unknown",rcode="OTHER",workload="unknown"} 0
isoobs_dns_responses_total{namespace="unknown",rcode="REFUSED",workload="unknown"} 0
isoobs_dns_responses_total{namespace="unknown",rcode="SERVFAIL",workload="unknown"} 0
`
	if err := testutil.GatherAndCompare(f.c.metrics.reg, strings.NewReader(expected), "isoobs_dns_responses_total"); err != nil {
		t.Error(err)
	}
	mfs, err := f.c.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, mf := range mfs {
		found[mf.GetName()] = true
		if mf.GetName() == "isoobs_dns_latency_seconds" {
			for _, m := range mf.Metric {
				if m.Label[0].GetValue() == "tenant-jobs" && m.Histogram.GetSampleCount() != 16 {
					t.Errorf("latency count %d", m.Histogram.GetSampleCount())
				}
			}
		}
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == "pod" || l.GetName() == "name" || l.GetName() == "qname" || strings.Contains(l.GetValue(), uidCrawler) {
					t.Errorf("high-cardinality label in %s: %v", mf.GetName(), l)
				}
			}
		}
	}
	for _, n := range []string{"isoobs_map_entries", "isoobs_lost_total", "isoobs_probes_attached", "isoobs_collector_read_duration_seconds", "isoobs_dns_name_overflow_total", "isoobs_dns_host_queries_total", "isoobs_dns_malformed_total"} {
		if !found[n] {
			t.Errorf("metric %s missing", n)
		}
	}
	if v := metricValue(t, f, "isoobs_dns_host_queries_total"); v != 100 {
		t.Errorf("host queries metric %v", v)
	}
}

// metricValue is the value of a single-series counter or gauge.
func metricValue(t *testing.T, f *fixture, name string) float64 {
	mfs, err := f.c.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.Metric[0]
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	t.Fatalf("%s not found", name)
	return 0
}

func TestStatus(t *testing.T) {
	f := newFixture(t, nil)
	d := &Daemon{cfg: *f.cfg, src: f.src, coll: f.c, kernel: kernelRelease()}
	d.cfg.CgroupRoot = "/fake"
	s := &server{d: d}
	f.c.tick(f.now)
	f.src.query(900, "a.", 3, bpf.RcodeNoError, time.Millisecond)
	f.src.query(101, "a.", 3, bpf.RcodeNoError, time.Millisecond)
	f.step()
	st, err := s.Status(t.Context(), &isoobsv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Node != "node-a" || !st.CountingSince.AsTime().Equal(time.Unix(1_700_000_000, 0)) || len(st.Probes) != 2 || !st.Probes[0].Attached ||
		st.Counters["host_queries"] != 3 || st.PodsKnown != 1 || st.KubernetesConnected || st.Kernel == "" || st.Counters["ticks"] != 2 {
		t.Errorf("status %v", st)
	}
	if err := d.Healthy(); err == nil {
		t.Error("healthy although the last tick is in 2023")
	}
}
