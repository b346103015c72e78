package daemon

import (
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/isoobs/isoobs/bpf"
	"github.com/isoobs/isoobs/daemon/podmeta"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// fakeTCPSource stands in for the TCP probe's map: cumulative per-cgroup counters.
type fakeTCPSource struct {
	mu      sync.Mutex
	cgroups map[uint64]bpf.TCPCounters
	drops   map[bpf.DropKey]bpf.DropCounters
	peers   map[bpf.PeerKey]bpf.PeerCounters
	// locations: drop locations (ReadDropLocations)
	locations map[bpf.DropLocationKey]uint64
	// dsts: socket-less drops per destination (ReadDropDestinations)
	dsts    map[bpf.DropDstKey]bpf.DropCounters
	deleted []uint64
	// peersDeleted: the peer entries DeletePeers removed.
	peersDeleted []bpf.PeerKey
	// dstsDeleted: the per-destination entries DeleteDropDestinations removed; beforeDstDelete
	// (if set) runs just before, standing for drops counted between a read and the delete.
	dstsDeleted     []bpf.DropDstKey
	beforeDstDelete func()
}

func (f *fakeTCPSource) DeleteDropDestinations(keys []bpf.DropDstKey) (map[bpf.DropDstKey]bpf.DropCounters, error) {
	f.mu.Lock()
	hook := f.beforeDstDelete
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[bpf.DropDstKey]bpf.DropCounters{}
	for _, k := range keys {
		if v, ok := f.dsts[k]; ok {
			out[k] = v
			delete(f.dsts, k)
			f.dstsDeleted = append(f.dstsDeleted, k)
		}
	}
	return out, nil
}

func (f *fakeTCPSource) addPeer(k bpf.PeerKey, fn func(c *bpf.PeerCounters)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.peers == nil {
		f.peers = map[bpf.PeerKey]bpf.PeerCounters{}
	}
	c := f.peers[k]
	fn(&c)
	f.peers[k] = c
}

func (f *fakeTCPSource) ReadDropLocations() (map[bpf.DropLocationKey]uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[bpf.DropLocationKey]uint64, len(f.locations))
	for k, v := range f.locations {
		out[k] = v
	}
	return out, nil
}

func (f *fakeTCPSource) ReadPeers() (map[bpf.PeerKey]bpf.PeerCounters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[bpf.PeerKey]bpf.PeerCounters, len(f.peers))
	for k, v := range f.peers {
		out[k] = v
	}
	return out, nil
}

func (f *fakeTCPSource) DeletePeers(keys []bpf.PeerKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range keys {
		delete(f.peers, k)
	}
	f.peersDeleted = append(f.peersDeleted, keys...)
	return nil
}

func (f *fakeTCPSource) add(id uint64, fn func(c *bpf.TCPCounters)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.cgroups[id]
	fn(&c)
	f.cgroups[id] = c
}

func (f *fakeTCPSource) ReadTCP() (map[uint64]bpf.TCPCounters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[uint64]bpf.TCPCounters, len(f.cgroups))
	for k, v := range f.cgroups {
		out[k] = v
	}
	return out, nil
}
func (f *fakeTCPSource) Stats() (bpf.TCPStats, error)  { return bpf.TCPStats{}, nil }
func (f *fakeTCPSource) Attachments() []bpf.Attachment { return nil }
func (f *fakeTCPSource) DeleteCgroups(ids []uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		delete(f.cgroups, id)
		for k := range f.peers {
			if k.CgroupID == id {
				delete(f.peers, k)
			}
		}
	}
	f.deleted = append(f.deleted, ids...)
	return nil
}
func (f *fakeTCPSource) Close() error { return nil }
func (f *fakeTCPSource) ReadDrops() (map[bpf.DropKey]bpf.DropCounters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[bpf.DropKey]bpf.DropCounters, len(f.drops))
	for k, v := range f.drops {
		out[k] = v
	}
	return out, nil
}

type tcpFixture struct {
	*fixture
	tsrc *fakeTCPSource
	tc   *tcpCollector
}

func newTCPFixture(t *testing.T) *tcpFixture {
	f := &tcpFixture{fixture: newFixture(t, nil), tsrc: &fakeTCPSource{cgroups: map[uint64]bpf.TCPCounters{}, drops: map[bpf.DropKey]bpf.DropCounters{}}}
	f.tc = newTCPCollector(f.cfg, f.tsrc, f.res, f.meta, f.now)
	f.tc.metrics = newTCPMetrics(f.tc)
	return f
}

func (f *tcpFixture) step() {
	f.now = f.now.Add(time.Second)
	f.tc.tick(f.now)
}

func (f *tcpFixture) frame(t *testing.T, req *isoobsv1.TopRequest) *isoobsv1.TopFrame {
	t.Helper()
	if req.Dimension == isoobsv1.Dimension_DIMENSION_UNSPECIFIED {
		req.Dimension = isoobsv1.Dimension_DIMENSION_TCP
	}
	q, err := newTCPQuery(req, f.cfg.Interval)
	if err != nil {
		t.Fatal(err)
	}
	f.tc.startStream(q)
	return f.tc.frame(q)
}

func tcpRowByPod(fr *isoobsv1.TopFrame, pod string) *isoobsv1.TCPRow {
	for _, r := range fr.TcpRows {
		if r.Pod == pod || (r.Pod == "" && r.PodUid == pod) {
			return r
		}
	}
	return nil
}

func TestTCPCollectorAttributesPodsNeverHosts(t *testing.T) {
	f := newTCPFixture(t)
	f.step()
	// The crawler's two containers (101, 102) refuse and reset; the host's chronyd (900) does
	// the same and must never become a row.
	for _, id := range []uint64{101, 102, 900} {
		f.tsrc.add(id, func(c *bpf.TCPCounters) {
			c.ActiveOpens += 10
			c.ConnectRefused += 5
			c.ResetsReceived += 2
			c.RetransSegs += 3
			c.BytesOut += 1000
			c.RTTLog2US[10] += 4 // ~1 ms
		})
	}
	f.tsrc.add(301, func(c *bpf.TCPCounters) { c.PassiveOpens += 20; c.ResetsSent += 4; c.BytesIn += 2000 })
	f.step()
	fr := f.frame(t, &isoobsv1.TopRequest{})
	if len(fr.TcpRows) != 2 {
		t.Fatalf("rows %d, want 2 (crawler and coreapi; the host is no row): %v", len(fr.TcpRows), fr.TcpRows)
	}
	cr := tcpRowByPod(fr, "crawler-7d9f-a")
	if cr == nil || cr.ActiveOpens != 20 || cr.ConnectRefused != 10 || cr.ResetsReceived != 4 || cr.RetransSegs != 6 || cr.BytesOut != 2000 {
		t.Fatalf("crawler row %+v: want both containers summed (20 opens, 10 refused, 4 resets, 6 retransmits, 2000 bytes)", cr)
	}
	if cr.Namespace != "tenant-jobs" || cr.Workload != "crawler" || cr.Node != "node-a" {
		t.Errorf("crawler row identity: %s/%s on %s", cr.Namespace, cr.Workload, cr.Node)
	}
	if cr.ConnectFailuresPerSecond != 10 || cr.ResetsPerSecond != 4 {
		t.Errorf("crawler rates: failures %.1f/s resets %.1f/s, want 10 and 4 over the 1 s tick", cr.ConnectFailuresPerSecond, cr.ResetsPerSecond)
	}
	if cr.RttP50Ms < 1.024 || cr.RttP50Ms >= 2.048 {
		t.Errorf("crawler RTT p50 %.3f ms, want in the [1.024, 2.048) ms bucket", cr.RttP50Ms)
	}
	if fr.TcpRows[0] != cr {
		t.Errorf("default sort (errors: failures+resets per second) should rank the crawler first, got %s", fr.TcpRows[0].Pod)
	}
	if fr.TcpTotal.ActiveOpens != 20 || fr.TcpTotal.PassiveOpens != 20 {
		t.Errorf("total opens active %d passive %d, want 20 and 20 (the host's left out)", fr.TcpTotal.ActiveOpens, fr.TcpTotal.PassiveOpens)
	}
	if f.tc.host.ActiveOpens != 10 || f.tc.hostCgroups != 1 {
		t.Errorf("host counters: %d opens in %d cgroups, want 10 in 1", f.tc.host.ActiveOpens, f.tc.hostCgroups)
	}

	// Group by workload: the second crawler pod joins the first.
	f.tsrc.add(201, func(c *bpf.TCPCounters) { c.ActiveOpens += 7 })
	f.step()
	fr = f.frame(t, &isoobsv1.TopRequest{GroupBy: isoobsv1.GroupBy_GROUP_BY_WORKLOAD, Sort: "opens"})
	if len(fr.TcpRows) != 2 || fr.TcpRows[0].Workload != "crawler" || fr.TcpRows[0].Pods != 2 || fr.TcpRows[0].ActiveOpens != 27 || fr.TcpRows[0].Pod != "" {
		t.Fatalf("by workload: %v", fr.TcpRows)
	}

	// Metrics: per namespace and workload, never per pod; the host's not at all.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(f.tc.metrics)
	want := `
# HELP isoobs_tcp_connect_failures_total TCP connects of pods that failed, by reason (refused: answered by a RST; timeout: no answer to the SYNs; other), per namespace and workload.
# TYPE isoobs_tcp_connect_failures_total counter
isoobs_tcp_connect_failures_total{namespace="tenant-api",reason="other",workload="coreapi"} 0
isoobs_tcp_connect_failures_total{namespace="tenant-api",reason="refused",workload="coreapi"} 0
isoobs_tcp_connect_failures_total{namespace="tenant-api",reason="timeout",workload="coreapi"} 0
isoobs_tcp_connect_failures_total{namespace="tenant-jobs",reason="other",workload="crawler"} 0
isoobs_tcp_connect_failures_total{namespace="tenant-jobs",reason="refused",workload="crawler"} 10
isoobs_tcp_connect_failures_total{namespace="tenant-jobs",reason="timeout",workload="crawler"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "isoobs_tcp_connect_failures_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg, "isoobs_tcp_connections_opened_total"); err != nil || n != 4 {
		t.Errorf("opened series %d (%v), want 4: two workloads x active/passive", n, err)
	}
}

func TestTCPCollectorSinceStreamStartAndFilters(t *testing.T) {
	f := newTCPFixture(t)
	f.tsrc.add(101, func(c *bpf.TCPCounters) { c.ActiveOpens += 100 })
	f.step()
	req := &isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_TCP, SinceStreamStart: true, Namespace: "tenant-jobs"}
	q, err := newTCPQuery(req, f.cfg.Interval)
	if err != nil {
		t.Fatal(err)
	}
	f.tc.startStream(q)
	f.tsrc.add(101, func(c *bpf.TCPCounters) { c.ActiveOpens += 3 })
	f.tsrc.add(301, func(c *bpf.TCPCounters) { c.ActiveOpens += 50 })
	f.step()
	fr := f.tc.frame(q)
	if len(fr.TcpRows) != 1 || fr.TcpRows[0].ActiveOpens != 3 {
		t.Fatalf("since stream start in tenant-jobs: %v, want one row with the 3 opens made after the stream started", fr.TcpRows)
	}
	if _, err := newTCPQuery(&isoobsv1.TopRequest{Sort: "qps"}, time.Second); err == nil {
		t.Error("a DNS sort key was accepted for TCP")
	}
	if _, err := newTCPQuery(&isoobsv1.TopRequest{GroupBy: isoobsv1.GroupBy_GROUP_BY_QNAME}, time.Second); err == nil {
		t.Error("group by qname was accepted for TCP")
	}
}

func TestTCPCollectorForgetsGoneCgroups(t *testing.T) {
	f := newTCPFixture(t)
	f.tsrc.add(401, func(c *bpf.TCPCounters) { c.ActiveOpens++ })
	f.step()
	f.res.gone[401] = true
	for range int(f.cfg.Retention/time.Second) + 2*f.cfg.gcEvery() {
		f.step()
	}
	if len(f.tc.subjects) != 0 || len(f.tsrc.deleted) != 1 || f.tsrc.deleted[0] != 401 {
		t.Fatalf("after the retention: %d subjects, kernel entries deleted %v; want none and [401]", len(f.tc.subjects), f.tsrc.deleted)
	}
}

func TestDropsViewByPodAndReason(t *testing.T) {
	f := newTCPFixture(t)
	f.step()
	reasons, err := bpfDropReasons()
	if err != nil {
		t.Skip(err)
	}
	nf, nosock := reasons["NETFILTER_DROP"], reasons["NO_SOCKET"]
	f.tsrc.mu.Lock()
	f.tsrc.drops[bpf.DropKey{CgroupID: 101, Reason: nf}] = bpf.DropCounters{Packets: 30, Bytes: 3000}
	f.tsrc.drops[bpf.DropKey{CgroupID: 102, Reason: nosock}] = bpf.DropCounters{Packets: 5, Bytes: 500}
	f.tsrc.drops[bpf.DropKey{CgroupID: 900, Reason: nf}] = bpf.DropCounters{Packets: 1000, Bytes: 1} // the host
	f.tsrc.drops[bpf.DropKey{CgroupID: 0, Reason: nosock}] = bpf.DropCounters{Packets: 7, Bytes: 700}
	// Where (addresses below every kernel symbol: named by their hex), node-wide.
	f.tsrc.locations = map[bpf.DropLocationKey]uint64{{Location: 0x10, Reason: nf}: 1030, {Location: 0x20, Reason: nosock}: 12}
	f.tsrc.mu.Unlock()
	f.step()
	fr := f.frame(t, &isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DROPS})
	if len(fr.DropRows) != 1 {
		t.Fatalf("drop rows %v, want the crawler only (the host is no row)", fr.DropRows)
	}
	r := fr.DropRows[0]
	if r.Pod != "crawler-7d9f-a" || r.Packets != 35 || r.PacketsPerSecond != 35 || len(r.Reasons) != 2 ||
		r.Reasons[0].Reason != "NETFILTER_DROP" || r.Reasons[0].Packets != 30 || r.Reasons[1].Reason != "NO_SOCKET" {
		t.Errorf("crawler drops: %v", r)
	}
	if fr.DropTotal.Packets != 35 || fr.DropNoSocket.Packets != 7 || fr.DropNoSocket.Reasons[0].Reason != "NO_SOCKET" {
		t.Errorf("total %v, no socket %v", fr.DropTotal, fr.DropNoSocket)
	}
	if len(fr.TcpRows) != 0 {
		t.Errorf("a drops frame carries TCP rows: %v", fr.TcpRows)
	}
	if l := fr.DropLocations; len(l) != 2 || l[0].Location != "0x10" || l[0].Reason != "NETFILTER_DROP" || l[0].Packets != 1030 ||
		l[1].Location != "0x20" || l[1].Reason != "NO_SOCKET" || l[1].Packets != 12 {
		t.Errorf("drop locations %v, want 0x10 NETFILTER_DROP 1030, 0x20 NO_SOCKET 12", l)
	}
	// Since a stream's start: only the drops after.
	q, err := newTCPQuery(&isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DROPS, SinceStreamStart: true}, f.cfg.Interval)
	if err != nil {
		t.Fatal(err)
	}
	f.tc.startStream(q)
	f.tsrc.mu.Lock()
	f.tsrc.locations[bpf.DropLocationKey{Location: 0x20, Reason: nosock}] += 5
	f.tsrc.mu.Unlock()
	f.step()
	if l := f.tc.frame(q).DropLocations; len(l) != 1 || l[0].Location != "0x20" || l[0].Packets != 5 {
		t.Errorf("drop locations since the stream started: %v, want 0x20 NO_SOCKET 5", l)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(f.tc.metrics)
	want := `
# HELP isoobs_drops_total Packets of pods' sockets the kernel dropped, by the kernel's drop reason (NETFILTER_DROP, NO_SOCKET, ...), per namespace and workload.
# TYPE isoobs_drops_total counter
isoobs_drops_total{namespace="tenant-jobs",reason="NETFILTER_DROP",workload="crawler"} 30
isoobs_drops_total{namespace="tenant-jobs",reason="NO_SOCKET",workload="crawler"} 5
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "isoobs_drops_total"); err != nil {
		t.Error(err)
	}
}

// bpfDropReasons maps the running kernel's drop reason names to numbers.
func bpfDropReasons() (map[string]uint32, error) {
	out := map[string]uint32{}
	for r := uint32(2); r < 1024; r++ {
		n := bpf.DropReasonName(r)
		if strings.HasPrefix(n, "REASON_") {
			continue
		}
		out[n] = r
	}
	if out["NETFILTER_DROP"] == 0 || out["NO_SOCKET"] == 0 {
		return nil, errors.New("kernel BTF without NETFILTER_DROP and NO_SOCKET drop reasons")
	}
	return out, nil
}

func (f *fakeTCPSource) ReadDropDestinations() (map[bpf.DropDstKey]bpf.DropCounters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[bpf.DropDstKey]bpf.DropCounters, len(f.dsts))
	for k, v := range f.dsts {
		out[k] = v
	}
	return out, nil
}

// TestDropsByDestinationPod: drops without a socket are the pod's whose address they went to
// (IPv4 and IPv6), exactly; an address two pods claim, one
// that is no pod's and packets without an address stay in the node's no-socket row, counted.
func TestDropsByDestinationPod(t *testing.T) {
	f := newTCPFixture(t)
	const uidProxy = "55555555-5555-4555-8555-555555555555"
	f.res.paths[100] = systemdPod(uidCrawler)
	f.res.paths[300] = "/kubepods/burstable/pod" + uidAPI
	f.res.paths[500] = systemdPod(uidProxy)
	f.res.paths[210] = systemdPod(uidCrawler2)
	crawler := f.meta[uidCrawler]
	crawler.IPs = []string{"10.34.2.5", "fd00:10:34:2::5"}
	f.meta[uidCrawler] = crawler
	c2 := f.meta[uidCrawler2]
	c2.IPs = []string{"172.18.0.2"} // claimed by two pods (a pod's address passed on while the old pod's cgroup is still there)
	f.meta[uidCrawler2] = c2
	f.meta[uidProxy] = podmeta.Pod{UID: uidProxy, Name: "kube-proxy-x", Namespace: "kube-system", Workload: "kube-proxy", WorkloadKind: "DaemonSet", IPs: []string{"172.18.0.2"}}
	walks := 0
	f.tc.podCgroups = func(string) map[string]uint64 {
		walks++
		return map[string]uint64{uidCrawler: 100, uidAPI: 300, uidProxy: 500, uidCrawler2: 210}
	}
	reasons, err := bpfDropReasons()
	if err != nil {
		t.Skip(err)
	}
	nf, nosock := reasons["NETFILTER_DROP"], reasons["NO_SOCKET"]
	f.step()
	f.tsrc.mu.Lock()
	f.tsrc.dsts = map[bpf.DropDstKey]bpf.DropCounters{
		{Addr: netip.MustParseAddr("10.34.2.5"), Reason: nf}:       {Packets: 17, Bytes: 1700},
		{Addr: netip.MustParseAddr("fd00:10:34:2::5"), Reason: nf}: {Packets: 4, Bytes: 400},
		{Addr: netip.MustParseAddr("172.18.0.2"), Reason: nf}:      {Packets: 9, Bytes: 900},
		{Addr: netip.MustParseAddr("10.99.0.1"), Reason: nosock}:   {Packets: 3, Bytes: 300},
		{Reason: nf}: {Packets: 2, Bytes: 200},
	}
	f.tsrc.drops[bpf.DropKey{CgroupID: 0, Reason: nf}] = bpf.DropCounters{Packets: 1, Bytes: 100} // table full
	f.tsrc.mu.Unlock()
	f.step()
	fr := f.frame(t, &isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DROPS})
	if len(fr.DropRows) != 1 {
		t.Fatalf("drop rows %v, want the crawler only", fr.DropRows)
	}
	r := fr.DropRows[0]
	if r.Pod != "crawler-7d9f-a" || r.Packets != 21 || r.Bytes != 2100 || len(r.Reasons) != 1 || r.Reasons[0].Reason != "NETFILTER_DROP" {
		t.Errorf("crawler: %v, want 21 NETFILTER_DROP (17 IPv4 + 4 IPv6)", r)
	}
	ns := fr.DropNoSocket
	if ns.Packets != 15 || fr.DropTotal.Packets != 21 {
		t.Errorf("no socket %v (want 9 to the shared address + 3 to no pod + 2 without one + 1 overflow = 15), total %v", ns, fr.DropTotal)
	}
	// More of the same: no new walk (every address known); the increments only.
	f.tsrc.mu.Lock()
	f.tsrc.dsts[bpf.DropDstKey{Addr: netip.MustParseAddr("10.34.2.5"), Reason: nf}] = bpf.DropCounters{Packets: 20, Bytes: 2000}
	f.tsrc.dsts[bpf.DropDstKey{Addr: netip.MustParseAddr("10.99.0.1"), Reason: nosock}] = bpf.DropCounters{Packets: 5, Bytes: 500}
	f.tsrc.mu.Unlock()
	f.step()
	fr = f.frame(t, &isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DROPS})
	if fr.DropRows[0].Packets != 24 || fr.DropNoSocket.Packets != 17 || walks != 1 {
		t.Errorf("after more: crawler %d, no socket %d, walks %d; want 24, 17, 1", fr.DropRows[0].Packets, fr.DropNoSocket.Packets, walks)
	}
	// A new address (the API pod's, in its status since the last index) asks for a new
	// index, at most every 2 s.
	api := f.meta[uidAPI]
	api.IPs = []string{"10.34.3.5"}
	f.meta[uidAPI] = api
	f.tsrc.mu.Lock()
	f.tsrc.dsts[bpf.DropDstKey{Addr: netip.MustParseAddr("10.34.3.5"), Reason: nf}] = bpf.DropCounters{Packets: 6, Bytes: 600}
	f.tsrc.mu.Unlock()
	f.step()
	fr = f.frame(t, &isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DROPS})
	if r := dropRowByPod(fr, "coreapi-0"); r == nil || r.Packets != 6 || walks != 2 {
		t.Errorf("coreapi: %v (walks %d), want 6 NETFILTER_DROP", r, walks)
	}
	if f.tc.dropsByAddress != 30 || f.tc.dropsAmbiguousAddress != 9 {
		t.Errorf("status: by address %d, ambiguous %d; want 30, 9", f.tc.dropsByAddress, f.tc.dropsAmbiguousAddress)
	}
}

func dropRowByPod(fr *isoobsv1.TopFrame, pod string) *isoobsv1.DropRow {
	for _, r := range fr.DropRows {
		if r.Pod == pod {
			return r
		}
	}
	return nil
}

// TestDropDestinationsIdleForgotten: a per-destination entry whose counters have not changed for
// a minute is deleted from the kernel table at the next collection (every 10 s), and only then:
// one last changed at tick 1 is still there at tick 69 (59 s idle at tick 60's collection) and
// gone at tick 70; what an entry gained between the last read and the delete (2 packets) is
// counted, once; a new drop to a forgotten address is a new entry, counted from zero (4 packets,
// not 4-5 or 4+5).
func TestDropDestinationsIdleForgotten(t *testing.T) {
	f := newTCPFixture(t)
	f.res.paths[100] = systemdPod(uidCrawler)
	crawler := f.meta[uidCrawler]
	crawler.IPs = []string{"10.34.2.5"}
	f.meta[uidCrawler] = crawler
	f.tc.podCgroups = func(string) map[string]uint64 { return map[string]uint64{uidCrawler: 100} }
	const nf = 17 // any reason number: the collector does not name it
	toPod := bpf.DropDstKey{Addr: netip.MustParseAddr("10.34.2.5"), Reason: nf}
	toNone := bpf.DropDstKey{Addr: netip.MustParseAddr("10.99.0.1"), Reason: nf}
	set := func(k bpf.DropDstKey, packets uint64) {
		f.tsrc.mu.Lock()
		defer f.tsrc.mu.Unlock()
		if f.tsrc.dsts == nil {
			f.tsrc.dsts = map[bpf.DropDstKey]bpf.DropCounters{}
		}
		f.tsrc.dsts[k] = bpf.DropCounters{Packets: packets, Bytes: 100 * packets}
	}
	has := func(k bpf.DropDstKey) bool {
		f.tsrc.mu.Lock()
		defer f.tsrc.mu.Unlock()
		_, ok := f.tsrc.dsts[k]
		return ok
	}
	podDrops := func() bpf.DropCounters {
		s := f.tc.subjects[uidCrawler]
		if s == nil {
			return bpf.DropCounters{}
		}
		return s.drops[nf]
	}
	f.tc.tick(f.now) // tick 0
	set(toPod, 5)
	set(toNone, 3)
	f.step() // tick 1: both counted, toPod's last change
	for tick := 2; tick <= 69; tick++ {
		if tick == 15 {
			set(toNone, 4) // toNone's last change: tick 15
		}
		f.step()
	}
	if !has(toPod) || !has(toNone) || f.tc.dropDstsForgotten != 0 {
		t.Fatalf("at tick 69 (toPod idle 68 s, collected last at tick 60 when idle 59 s): entries deleted %v, forgotten %d; want none", f.tsrc.dstsDeleted, f.tc.dropDstsForgotten)
	}
	f.step() // tick 70: collection, toPod idle 69 s
	if has(toPod) || !has(toNone) || f.tc.dropDstsForgotten != 1 || f.tc.dstLast[toPod] != nil {
		t.Fatalf("at tick 70: deleted %v, forgotten %d; want toPod only, 1", f.tsrc.dstsDeleted, f.tc.dropDstsForgotten)
	}
	// toNone gains 2 packets after tick 79's read, before tick 80's delete: counted, once.
	f.tsrc.beforeDstDelete = func() { set(toNone, 6) }
	for tick := 71; tick <= 80; tick++ {
		f.step()
	}
	f.tsrc.beforeDstDelete = nil
	if has(toNone) || f.tc.dropDstsForgotten != 2 {
		t.Fatalf("at tick 80: deleted %v, forgotten %d; want toNone too, 2", f.tsrc.dstsDeleted, f.tc.dropDstsForgotten)
	}
	if got := f.tc.noSocket[nf]; got != (bpf.DropCounters{Packets: 6, Bytes: 600}) {
		t.Errorf("no socket %+v, want 6 packets (3, +1 at tick 15, +2 between the last read and the delete), 600 bytes", got)
	}
	// New drops to both addresses: new kernel entries, counted from zero.
	set(toPod, 4)
	set(toNone, 1)
	f.step()
	if got := podDrops(); got != (bpf.DropCounters{Packets: 9, Bytes: 900}) {
		t.Errorf("pod drops %+v, want 9 packets (5 + 4 after the entry was made again), 900 bytes", got)
	}
	if got := f.tc.noSocket[nf]; got.Packets != 7 {
		t.Errorf("no socket %d packets, want 7", got.Packets)
	}
	if f.tc.dropsByAddress != 9 || len(f.tsrc.dstsDeleted) != 2 {
		t.Errorf("by address %d, deleted %v; want 9, two entries", f.tc.dropsByAddress, f.tsrc.dstsDeleted)
	}
	// More to the pod's address: the increment only.
	set(toPod, 6)
	f.step()
	if got := podDrops().Packets; got != 11 {
		t.Errorf("pod drops %d, want 11", got)
	}
}

// TestDropsByDestinationHostNetworkPod: a hostNetwork pod's status.podIPs are the node's: drops to
// them are not the pod's even when it is the only hostNetwork pod on the node (they stay in the
// node's no-socket row: 9 IPv4 + 2 IPv6), while a pod's own address still gives it its drops (17).
// The same pod without the flag would take the node's 11 (the rule it replaces).
func TestDropsByDestinationHostNetworkPod(t *testing.T) {
	const uidProxy = "55555555-5555-4555-8555-555555555555"
	const nf = 17 // any reason number: the collector does not name it
	for _, hostNetwork := range []bool{true, false} {
		f := newTCPFixture(t)
		f.res.paths[100] = systemdPod(uidCrawler)
		f.res.paths[500] = systemdPod(uidProxy)
		crawler := f.meta[uidCrawler]
		crawler.IPs = []string{"10.34.2.5"}
		f.meta[uidCrawler] = crawler
		f.meta[uidProxy] = podmeta.Pod{UID: uidProxy, Name: "kube-proxy-x", Namespace: "kube-system", Workload: "kube-proxy", WorkloadKind: "DaemonSet",
			IPs: []string{"172.18.0.2", "fd00:18::2"}, HostNetwork: hostNetwork}
		f.tc.podCgroups = func(string) map[string]uint64 { return map[string]uint64{uidCrawler: 100, uidProxy: 500} }
		f.step()
		f.tsrc.mu.Lock()
		f.tsrc.dsts = map[bpf.DropDstKey]bpf.DropCounters{
			{Addr: netip.MustParseAddr("10.34.2.5"), Reason: nf}:  {Packets: 17, Bytes: 1700},
			{Addr: netip.MustParseAddr("172.18.0.2"), Reason: nf}: {Packets: 9, Bytes: 900},
			{Addr: netip.MustParseAddr("fd00:18::2"), Reason: nf}: {Packets: 2, Bytes: 200},
		}
		f.tsrc.mu.Unlock()
		f.step()
		fr := f.frame(t, &isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DROPS})
		proxy, cr := dropRowByPod(fr, "kube-proxy-x"), dropRowByPod(fr, "crawler-7d9f-a")
		if cr == nil || cr.Packets != 17 || cr.Bytes != 1700 {
			t.Errorf("hostNetwork %v: crawler %v, want 17 packets", hostNetwork, cr)
		}
		if hostNetwork {
			if proxy != nil || len(fr.DropRows) != 1 || fr.DropNoSocket.GetPackets() != 11 || fr.DropNoSocket.GetBytes() != 1100 ||
				f.tc.dropsByAddress != 17 || f.tc.dropsAmbiguousAddress != 0 {
				t.Errorf("hostNetwork pod: row %v, rows %d, no socket %v, by address %d, ambiguous %d; want no row, 1, 11 packets (1,100 bytes), 17, 0",
					proxy, len(fr.DropRows), fr.DropNoSocket, f.tc.dropsByAddress, f.tc.dropsAmbiguousAddress)
			}
			continue
		}
		if proxy == nil || proxy.Packets != 11 || fr.DropNoSocket.GetPackets() != 0 || f.tc.dropsByAddress != 28 {
			t.Errorf("without the flag: row %v, no socket %v, by address %d; want 11 packets, 0, 28", proxy, fr.DropNoSocket, f.tc.dropsByAddress)
		}
	}
}
