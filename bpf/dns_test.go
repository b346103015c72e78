package bpf

import (
	"cmp"
	"fmt"
	"math/bits"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/isoobs/isoobs/cgroupv2"
)

// podTruth is what a test sent and received for one cgroup.
type podTruth struct {
	id    uint64
	want  PodCounters
	names map[string][2]uint64 // name -> {queries, nxdomain}
}

func newPodTruth(t *testing.T, dir string) *podTruth {
	id, err := cgroupv2.ID(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &podTruth{id: id, want: PodCounters{QType: map[uint16]uint64{}}, names: map[string][2]uint64{}}
}

func qtypeKey(t dnsmessage.Type) uint16 {
	for _, tracked := range TrackedQTypes {
		if uint16(t) == tracked {
			return tracked
		}
	}
	return QTypeOther
}

// send runs one query through c and records the ground truth.
func (pt *podTruth) send(t *testing.T, c *dnsClient, name string, qtype dnsmessage.Type) time.Duration {
	t.Helper()
	beforeOut, beforeIn := c.bytesOut, c.bytesIn
	rc, elapsed, err := c.query(name, qtype)
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	lower := strings.TrimSuffix(strings.ToLower(name), ".")
	if rc != rcodeFor(lower) {
		t.Fatalf("server answered %v for %s", rc, name)
	}
	w := &pt.want
	w.Queries++
	if c.tcp {
		w.TCPQueries++
	}
	w.QType[qtypeKey(qtype)]++
	w.Responses++
	w.Rcode[rcodeSlot(rc)]++
	w.BytesOut += c.bytesOut - beforeOut
	w.BytesIn += c.bytesIn - beforeIn
	server := netip.MustParseAddrPort(c.conn.RemoteAddr().String())
	i := slices.IndexFunc(w.Servers, func(s ServerCounters) bool { return s.Server == server })
	if i < 0 {
		w.Servers = append(w.Servers, ServerCounters{Server: server})
		i = len(w.Servers) - 1
	}
	s := &w.Servers[i]
	s.Queries++
	s.Answers++
	s.Timed++ // one query at a time: every answer is timed
	switch rc {
	case dnsmessage.RCodeNameError:
		s.NXDomain++
	case dnsmessage.RCodeServerFailure:
		s.ServFail++
	}
	n := pt.names[lower]
	n[0]++
	if rc == dnsmessage.RCodeNameError {
		n[1]++
	}
	pt.names[lower] = n
	return elapsed
}

// comparable strips the latency histogram (checked separately) and the servers' summed
// latency, and orders the servers as ReadPods does.
func withoutLatency(pc PodCounters) PodCounters {
	pc.LatencyLog2US = [NumLatencyBuckets]uint64{}
	pc.Servers = slices.Clone(pc.Servers)
	for i := range pc.Servers {
		pc.Servers[i].LatencySumUS = 0
	}
	slices.SortFunc(pc.Servers, func(a, b ServerCounters) int {
		if a.Queries != b.Queries {
			return cmp.Compare(b.Queries, a.Queries)
		}
		return a.Server.Compare(b.Server)
	})
	return pc
}

func sumBuckets(h [NumLatencyBuckets]uint64) (n uint64) {
	for _, v := range h {
		n += v
	}
	return n
}

func drainAll(t *testing.T, p *DNSProbe) map[uint64]map[string][2]uint64 {
	t.Helper()
	got := map[uint64]map[string][2]uint64{}
	err := p.DrainNames(func(id uint64, name string, q, nx uint64) {
		if got[id] == nil {
			got[id] = map[string][2]uint64{}
		}
		// A name may come twice in one drain (from the name table and from
		// its hot slot, or from an early drain): its counts add up.
		c := got[id][name]
		got[id][name] = [2]uint64{c[0] + q, c[1] + nx}
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

var testQTypes = []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA, dnsmessage.TypeMX, dnsmessage.TypeTXT,
	dnsmessage.TypeSRV, dnsmessage.Type(99) /* SPF: counted as other */, dnsmessage.TypeA}

var testPrefixes = []string{"ok", "nx", "ok", "sf", "rf", "fe", "nx", "ok"}

// queryName makes names that repeat (so per-name counts exceed 1) and mix
// rcodes; some are upper-case to check lower-casing.
func queryName(client string, i int) string {
	name := fmt.Sprintf("%s-%d.%s.svc.cluster.local.", testPrefixes[i%len(testPrefixes)], i%5, client)
	if i%4 == 3 {
		name = strings.ToUpper(name)
	}
	return name
}

// TestDNSCountsExactPerPod counts real DNS traffic (UDP and TCP, IPv4 and IPv6) with the DNS
// probe attached alone, and run by the TCP probe's programs (Options.Chained: what the daemon
// loads when both are on).
func TestDNSCountsExactPerPod(t *testing.T) {
	for _, chained := range []bool{false, true} {
		t.Run(map[bool]string{false: "alone", true: "after TCP"}[chained], func(t *testing.T) {
			testDNSCountsExactPerPod(t, chained)
		})
	}
}

func testDNSCountsExactPerPod(t *testing.T, chained bool) {
	l := newLab(t)
	root := l.cgroup("node1")
	podA := l.cgroup("node1/pod-a")
	podB := l.cgroup("node1/pod-b")
	coredns := l.cgroup("node1/coredns")
	outside := l.cgroup("outside") // sibling of the root: must not be counted
	l.startServer(coredns)

	p, err := LoadDNS(Options{CgroupRoot: root, Chained: chained})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if chained {
		tp, err := LoadTCP(TCPOptions{CgroupRoot: root, DNS: p})
		if err != nil {
			t.Fatal(err)
		}
		defer tp.Close()
	}
	for _, a := range p.Attachments() {
		if a.Err != nil || a.Target != root || strings.Contains(a.Hook, "tail call from tcp_") != chained {
			t.Fatalf("attachment %+v", a)
		}
	}

	truthA, truthB := newPodTruth(t, podA), newPodTruth(t, podB)
	truthOut := newPodTruth(t, outside)
	type run struct {
		truth    *podTruth
		client   *dnsClient
		label    string
		nQueries int
	}
	runs := []run{
		{truthA, l.dial(podA, false, false), "a-udp4", 40},
		{truthA, l.dial(podA, true, false), "a-tcp4", 23},
		{truthB, l.dial(podB, false, true), "b-udp6", 31},
		{truthB, l.dial(podB, true, true), "b-tcp6", 17},
		{truthOut, l.dial(outside, false, false), "out-udp4", 11},
	}
	for _, r := range runs {
		for i := 0; i < r.nQueries; i++ {
			r.truth.send(t, r.client, queryName(r.label, i), testQTypes[i%len(testQTypes)])
		}
	}

	pods, err := p.ReadPods()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := pods[truthOut.id]; ok {
		t.Errorf("cgroup outside the root was counted: %+v", pods[truthOut.id])
	}
	for _, pt := range []*podTruth{truthA, truthB} {
		got, ok := pods[pt.id]
		if !ok {
			t.Fatalf("cgroup %d not counted; have %v", pt.id, keys(pods))
		}
		if !reflect.DeepEqual(withoutLatency(got), withoutLatency(pt.want)) {
			t.Errorf("cgroup %d:\n got %+v\nwant %+v", pt.id, withoutLatency(got), withoutLatency(pt.want))
		}
		if n := sumBuckets(got.LatencyLog2US); n != pt.want.Responses {
			t.Errorf("cgroup %d: %d latency samples, want %d", pt.id, n, pt.want.Responses)
		}
	}

	// The DNS server pod is inside the root: it sees every query, including
	// the ones from the cgroup outside the root.
	srvID, _ := cgroupv2.ID(coredns)
	srv := pods[srvID]
	var total, bytesIn, bytesOut uint64
	for _, pt := range []*podTruth{truthA, truthB, truthOut} {
		total += pt.want.Queries
		bytesIn += pt.want.BytesOut
		bytesOut += pt.want.BytesIn
	}
	if srv.ServerQueries != total || srv.ServerResponses != total || srv.Queries != 0 || srv.Malformed != 0 ||
		srv.BytesIn != bytesIn || srv.BytesOut != bytesOut {
		t.Errorf("server pod: got %+v, want %d queries and responses, %d bytes in, %d out", srv, total, bytesIn, bytesOut)
	}
	if len(pods) != 3 {
		t.Errorf("counted %d cgroups, want 3 (two clients, one server): %v", len(pods), keys(pods))
	}

	names := drainAll(t, p)
	for _, pt := range []*podTruth{truthA, truthB} {
		if !reflect.DeepEqual(names[pt.id], pt.names) {
			t.Errorf("names of cgroup %d:\n got %v\nwant %v", pt.id, names[pt.id], pt.names)
		}
	}
	if len(names) != 2 {
		t.Errorf("names reported for %d cgroups, want 2", len(names))
	}
	if again := drainAll(t, p); len(again) != 0 {
		t.Errorf("second drain returned %v, want nothing", again)
	}

	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	clientQueries := truthA.want.Queries + truthB.want.Queries
	if st.InflightMatched != clientQueries || st.InflightInserted != clientQueries || st.UnmatchedResponses != 0 ||
		st.Malformed != 0 || st.NameOverflow != 0 || st.PodOverflow != 0 || st.InflightEvicted != 0 || st.Inflight.Entries != 0 {
		t.Errorf("stats %+v", st)
	}
	if st.Pods.Entries != 3 || st.Pods.Max != DefaultMaxPods || st.Names.Max != DefaultMaxNames || st.Names.Entries != 0 {
		t.Errorf("fill levels %+v", st)
	}
	t.Logf("stats: %+v", st)
}

// A DNS probe loaded to be run by the TCP probe attaches on its own when the TCP probe does
// not load (here: it is refused the chain to a probe on another root), and counts exactly.
func TestDNSChainedAttachesAloneWhenTCPFails(t *testing.T) {
	l := newLab(t)
	root := l.cgroup("node")
	pod := l.cgroup("node/pod")
	coredns := l.cgroup("node/coredns")
	l.startServer(coredns)
	p, err := LoadDNS(Options{CgroupRoot: root, Chained: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if tp, err := LoadTCP(TCPOptions{CgroupRoot: l.cgroup("elsewhere"), DNS: p}); err == nil {
		tp.Close()
		t.Fatal("LoadTCP chained a DNS probe on another root")
	} else if !strings.Contains(err.Error(), "Options.Chained on") {
		t.Errorf("LoadTCP error %q does not say what is wrong", err)
	}
	truth := newPodTruth(t, pod)
	c := l.dial(pod, false, false)
	truth.send(t, c, "before.attach.example.", testQTypes[0]) // not attached: not counted
	truth = newPodTruth(t, pod)
	if err := p.Attach(); err != nil {
		t.Fatal(err)
	}
	for _, a := range p.Attachments() {
		if a.Err != nil || a.Target != root || strings.Contains(a.Hook, "tail call") {
			t.Errorf("attachment %+v", a)
		}
	}
	for i := range 7 {
		truth.send(t, c, queryName("alone", i), testQTypes[i%len(testQTypes)])
	}
	pods, err := p.ReadPods()
	if err != nil {
		t.Fatal(err)
	}
	if got := pods[truth.id]; !reflect.DeepEqual(withoutLatency(got), withoutLatency(truth.want)) {
		t.Errorf("got %+v\nwant %+v", withoutLatency(got), withoutLatency(truth.want))
	}
}

func keys[V any](m map[uint64]V) []uint64 {
	var out []uint64
	for k := range m {
		out = append(out, k)
	}
	return out
}

func log2Bucket(us int64) int {
	if us < 1 {
		return 0
	}
	b := bits.Len64(uint64(us)) - 1
	if b > NumLatencyBuckets-1 {
		b = NumLatencyBuckets - 1
	}
	return b
}

func TestDNSLatencyHistogram(t *testing.T) {
	l := newLab(t)
	root := l.cgroup("node1")
	pod := l.cgroup("node1/pod")
	srv := l.startServer(l.cgroup("server")) // outside the root
	p, err := LoadDNS(Options{CgroupRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	id, _ := cgroupv2.ID(pod)

	for _, tc := range []struct {
		delay time.Duration
		n     int
		tcp   bool
	}{
		{3 * time.Millisecond, 20, false},
		{20 * time.Millisecond, 10, true},
	} {
		t.Run(fmt.Sprintf("delay=%v/tcp=%v", tc.delay, tc.tcp), func(t *testing.T) {
			srv.delayNS.Store(int64(tc.delay))
			before, _ := p.ReadPods()
			c := l.dial(pod, tc.tcp, false)
			truth := newPodTruth(t, pod)
			var clientBuckets [NumLatencyBuckets]uint64
			for i := 0; i < tc.n; i++ {
				d := truth.send(t, c, fmt.Sprintf("lat-%d.example.", i), dnsmessage.TypeA)
				clientBuckets[log2Bucket(d.Microseconds())]++
			}
			after, _ := p.ReadPods()
			var hist [NumLatencyBuckets]uint64
			for i := range hist {
				hist[i] = after[id].LatencyLog2US[i] - before[id].LatencyLog2US[i]
			}
			if sumBuckets(hist) != uint64(tc.n) {
				t.Fatalf("histogram %v has %d samples, want %d", hist, sumBuckets(hist), tc.n)
			}
			// The kernel sees the query leave after the client's clock starts
			// and the answer arrive before the client reads it, and the server
			// waits `delay` in between: delay <= probe latency <= client latency.
			// So no sample below delay's bucket, and the probe's CDF dominates
			// the client's at every bucket.
			minBucket := log2Bucket(tc.delay.Microseconds())
			var probeCDF, clientCDF uint64
			for b := 0; b < NumLatencyBuckets; b++ {
				probeCDF += hist[b]
				clientCDF += clientBuckets[b]
				if b < minBucket && hist[b] != 0 {
					t.Errorf("%d samples in bucket %d (< %d µs) but the server delays %v", hist[b], b, 1<<(b+1), tc.delay)
				}
				if probeCDF < clientCDF {
					t.Errorf("bucket %d: probe has %d samples <= 2^%d µs, client measured %d: probe latency exceeds client latency", b, probeCDF, b+1, clientCDF)
				}
			}
			t.Logf("probe buckets %v, client buckets %v", nonZero(hist), nonZero(clientBuckets))
		})
	}
}

func nonZero(h [NumLatencyBuckets]uint64) map[int]uint64 {
	out := map[int]uint64{}
	for i, v := range h {
		if v != 0 {
			out[i] = v
		}
	}
	return out
}

func TestDNSNameTableOverflow(t *testing.T) {
	l := newLab(t)
	root := l.cgroup("node1")
	pod := l.cgroup("node1/pod")
	l.startServer(l.cgroup("server"))
	const maxNames = 8
	p, err := LoadDNS(Options{CgroupRoot: root, MaxNames: maxNames, NoEarlyDrain: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	id, _ := cgroupv2.ID(pod)
	c := l.dial(pod, false, false)
	truth := newPodTruth(t, pod)

	// Round 1: 20 unique names, 8 fit. Round 2 after a drain: the table is
	// usable again.
	var overflow, prevOverflow uint64
	for round, unique := range []int{20, 5} {
		for i := 0; i < unique; i++ {
			truth.send(t, c, fmt.Sprintf("ok-%d-%d.example.", round, i), dnsmessage.TypeA)
		}
		if unique > maxNames {
			overflow += uint64(unique - maxNames)
		}
		st, err := p.Stats()
		if err != nil {
			t.Fatal(err)
		}
		wantFill := uint32(min(unique, maxNames))
		if st.NameOverflow != overflow || st.Names.Entries != wantFill || st.Names.Max != maxNames {
			t.Errorf("round %d: overflow %d, names %+v; want overflow %d, %d/%d entries", round, st.NameOverflow, st.Names, overflow, wantFill, maxNames)
		}
		got := drainAll(t, p)
		var counted uint64
		for name, v := range got[id] {
			if v != [2]uint64{1, 0} || !strings.HasPrefix(name, fmt.Sprintf("ok-%d-", round)) {
				t.Errorf("round %d: name %q counts %v", round, name, v)
			}
			counted += v[0]
		}
		if counted+st.NameOverflow-prevOverflow != uint64(unique) {
			t.Errorf("round %d: %d names counted + %d overflowed != %d sent", round, counted, st.NameOverflow-prevOverflow, unique)
		}
		prevOverflow = st.NameOverflow
	}
	pods, _ := p.ReadPods()
	if got := pods[id].Queries; got != truth.want.Queries {
		t.Errorf("pod queries %d, want %d (pod totals must not depend on the name table)", got, truth.want.Queries)
	}
	// A gone pod's counters can be forgotten; unknown ids are not an error.
	if err := p.DeletePods([]uint64{id, 1}); err != nil {
		t.Fatalf("DeletePods: %v", err)
	}
	if pods, _ := p.ReadPods(); len(pods) != 0 {
		t.Errorf("after DeletePods: %d pods left in the kernel map, want 0", len(pods))
	}
}

func TestDNSTwoProbesOnTwoRoots(t *testing.T) {
	l := newLab(t)
	node1, node2 := l.cgroup("nodes/node1"), l.cgroup("nodes/node2")
	pod1, pod2 := l.cgroup("nodes/node1/pod"), l.cgroup("nodes/node2/pod")
	l.startServer(l.cgroup("server")) // outside all three roots
	p1, err := LoadDNS(Options{CgroupRoot: node1})
	if err != nil {
		t.Fatal(err)
	}
	defer p1.Close()
	p2, err := LoadDNS(Options{CgroupRoot: node2})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	// A third probe on the common parent coexists (multi-attach) and sees both.
	pAll, err := LoadDNS(Options{CgroupRoot: l.cgroup("nodes")})
	if err != nil {
		t.Fatal(err)
	}
	defer pAll.Close()

	t1, t2 := newPodTruth(t, pod1), newPodTruth(t, pod2)
	c1, c2 := l.dial(pod1, false, false), l.dial(pod2, true, true)
	for i := 0; i < 7; i++ {
		t1.send(t, c1, queryName("n1", i), dnsmessage.TypeA)
	}
	for i := 0; i < 12; i++ {
		t2.send(t, c2, queryName("n2", i), dnsmessage.TypeAAAA)
	}
	check := func(name string, p *DNSProbe, want ...*podTruth) {
		pods, err := p.ReadPods()
		if err != nil {
			t.Fatal(err)
		}
		if len(pods) != len(want) {
			t.Errorf("%s: counted cgroups %v, want %d", name, keys(pods), len(want))
		}
		for _, pt := range want {
			if got := withoutLatency(pods[pt.id]); !reflect.DeepEqual(got, withoutLatency(pt.want)) {
				t.Errorf("%s: cgroup %d\n got %+v\nwant %+v", name, pt.id, got, withoutLatency(pt.want))
			}
		}
		names := drainAll(t, p)
		for _, pt := range want {
			if !reflect.DeepEqual(names[pt.id], pt.names) {
				t.Errorf("%s: names of %d: got %v want %v", name, pt.id, names[pt.id], pt.names)
			}
		}
	}
	check("probe on node1", p1, t1)
	check("probe on node2", p2, t2)
	check("probe on the parent", pAll, t1, t2)
}

func TestLoadDNSErrors(t *testing.T) {
	for _, tc := range []struct {
		root string
		want string
	}{
		{"", "cgroup root not set; set --cgroup-root"},
		{"/nonexistent/cgroup", `cgroup root "/nonexistent/cgroup" not found; set --cgroup-root`},
		{"/proc", "is not a cgroup v2 directory"},
	} {
		p, err := LoadDNS(Options{CgroupRoot: tc.root})
		if err == nil {
			p.Close()
			t.Fatalf("LoadDNS(%q) succeeded", tc.root)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadDNS(%q) = %q, want it to contain %q", tc.root, err, tc.want)
		}
	}
}

// TestDNSNameFloodDrainedEarly sends 5x more unique names than the kernel
// name table holds, paced over ~2 s, and drains once at the end: the probe's
// early drains (the table half full) keep every name, counted exactly.
func TestDNSNameFloodDrainedEarly(t *testing.T) {
	l := newLab(t)
	root := l.cgroup("node1")
	pod := l.cgroup("node1/pod")
	l.startServer(l.cgroup("server"))
	const maxNames, unique = 128, 640
	p, err := LoadDNS(Options{CgroupRoot: root, MaxNames: maxNames})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	id, _ := cgroupv2.ID(pod)
	c := l.dial(pod, false, false)
	truth := newPodTruth(t, pod)
	for i := 0; i < unique; i++ {
		truth.send(t, c, fmt.Sprintf("flood-%d.crawl.example.", i), dnsmessage.TypeA)
		time.Sleep(3 * time.Millisecond)
	}
	// The same name again after early drains: its counts add up.
	truth.send(t, c, "flood-0.crawl.example.", dnsmessage.TypeA)
	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint64]map[string][2]uint64{}
	if err := p.DrainNames(func(id uint64, name string, q, nx uint64) {
		if got[id] == nil {
			got[id] = map[string][2]uint64{}
		}
		c := got[id][name] // drained early and late: counts add up
		got[id][name] = [2]uint64{c[0] + q, c[1] + nx}
	}); err != nil {
		t.Fatal(err)
	}
	if st.NameOverflow != 0 {
		t.Errorf("name overflow %d with early drains", st.NameOverflow)
	}
	if len(got[id]) != unique {
		t.Errorf("%d names drained, want %d", len(got[id]), unique)
	}
	for i := 0; i < unique; i++ {
		want := [2]uint64{1, 0}
		if i == 0 {
			want = [2]uint64{2, 0}
		}
		if name := fmt.Sprintf("flood-%d.crawl.example", i); got[id][name] != want {
			t.Errorf("name %s counts %v, want %v", name, got[id][name], want)
		}
	}
}
