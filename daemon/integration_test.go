package daemon_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/bits"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/isoobs/isoobs/cgroupv2"
	"github.com/isoobs/isoobs/daemon"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/testlab/needroot"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(clientEnv); spec != "" {
		runDNSClient(spec)
	}
	os.Exit(m.Run())
}

// inProcessClient serves the daemon's API over an in-memory listener, as `top dns --local` does.
func inProcessClient(t *testing.T, d *daemon.Daemon) isoobsv1.DaemonClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	isoobsv1.RegisterDaemonServer(gs, d.GRPCServer())
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return isoobsv1.NewDaemonClient(conn)
}

// log2Bucket is the [lo, hi) µs bucket of the kernel histogram that holds us.
func log2Bucket(us int64) (lo, hi float64) {
	if us < 1 {
		return 0, 2
	}
	i := bits.Len64(uint64(us)) - 1
	return math.Ldexp(1, i), math.Ldexp(1, i+1)
}

// waitFrame reads frames until ok accepts one (counts settle within a tick or two after the
// clients exit), failing after limit frames.
func waitFrame(t *testing.T, stream isoobsv1.Daemon_TopClient, limit int, ok func(*isoobsv1.TopFrame) bool) *isoobsv1.TopFrame {
	t.Helper()
	var last *isoobsv1.TopFrame
	for range limit {
		f, err := stream.Recv()
		if err != nil {
			t.Fatalf("Top stream: %v", err)
		}
		last = f
		if ok(f) {
			return f
		}
	}
	t.Fatalf("no frame reached the expected counts in %d frames; last total %d queries, rows %v", limit, last.GetTotal().GetQueries(), last.GetRows())
	return nil
}

func rowByUID(f *isoobsv1.TopFrame, uid string) *isoobsv1.DNSRow {
	for _, r := range f.Rows {
		if r.PodUid == uid {
			return r
		}
	}
	return nil
}

// TestDaemonRealProbe runs the daemon with the real eBPF probe on a cgroup tree named like the
// kubelet's, sends known DNS traffic from processes inside the pod cgroups (and one outside),
// and checks the in-process gRPC API reports exactly that traffic.
// The DNS programs run after the TCP ones (a tail call) when the TCP probe is on, attached on
// their own when it is off: both are checked.
func TestDaemonRealProbe(t *testing.T) {
	for _, tcpOff := range []bool{false, true} {
		t.Run(map[bool]string{false: "after TCP", true: "TCP off"}[tcpOff], func(t *testing.T) {
			testDaemonRealProbe(t, tcpOff)
		})
	}
}

func testDaemonRealProbe(t *testing.T, tcpOff bool) {
	needroot.Require(t, "loads eBPF programs, creates cgroups and network namespaces")
	mount, err := cgroupv2.Detect()
	if err != nil {
		t.Fatal(err)
	}
	const (
		uidA = "0a1b2c3d-4e5f-4a6b-8c7d-8e9fa0b1c2d3" // systemd driver
		uidB = "f0e1d2c3-b4a5-4697-8889-7a6b5c4d3e2f" // cgroupfs driver
	)
	root := filepath.Join(mount, fmt.Sprintf("isoobs-daemon-test-%d", os.Getpid()))
	podA := "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + strings.ReplaceAll(uidA, "-", "_") + ".slice"
	ctrA := podA + "/cri-containerd-4f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0.scope"
	podB := "kubepods/burstable/pod" + uidB
	ctrB := podB + "/8796a5b4c3d2e1f00112233445566778899aabbccddeeff04f1e2d3c4b5a6978"
	host := "system.slice/chronyd.service"
	makeCgroups(t, root, ctrA, ctrB, host)
	srv := newServerNet(t)
	server := netip.AddrPortFrom(srv.serverIP, 53).String()

	before := time.Now()
	// Every query timed: the latency histogram is checked exactly below
	// (sampling is tested in bpf and by the e2e latency test).
	d, err := daemon.New(daemon.Config{NodeName: "lab-node-1", CgroupRoot: root, Interval: 200 * time.Millisecond, TimeEveryQuery: true, TCPDisabled: tcpOff})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	client := inProcessClient(t, d)

	// Status before any traffic: probes attached, counting since New.
	st, err := client.Status(ctx, &isoobsv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if since := st.CountingSince.AsTime(); since.Before(before) || since.After(time.Now()) {
		t.Errorf("counting_since %v not within this test's start %v and now", since, before)
	}
	attached := 0
	for _, p := range st.Probes {
		if !strings.HasPrefix(p.Name, "dns_") {
			continue // the TCP probe's programs: TestDaemonTCPRealProbe
		}
		if p.Attached && p.Target == root && strings.Contains(p.Hook, "(tail call from tcp_") != tcpOff {
			attached++
		} else {
			t.Errorf("probe %s not attached to %s: %s", p.Name, root, p.Error)
		}
	}
	if attached != 2 || st.Node != "lab-node-1" || st.CgroupRoot != root || !strings.Contains(st.Kernel, "Linux") {
		t.Errorf("status: %v", st)
	}

	stream, err := client.Top(ctx, &isoobsv1.TopRequest{TopNames: 10, IncludeUnresolved: true, Window: isoobsv1.Window_WINDOW_1M})
	if err != nil {
		t.Fatal(err)
	}

	// Known traffic. Pod A: 200 fast, 50 NXDOMAIN, 20 SERVFAIL, 30 slow (20 ms) = 300 queries;
	// pod B: 40; host process: 25 (must never show as a pod).
	resA := runClientIn(t, filepath.Join(root, ctrA), clientSpec{Server: server, Names: []clientQuery{
		{"api.example.com.", 200}, {nxPrefix + "missing.example.com.", 50}, {failPrefix + "x.example.com.", 20}, {slowPrefix + "a.example.com.", 30},
	}})
	resB := runClientIn(t, filepath.Join(root, ctrB), clientSpec{Server: server, Names: []clientQuery{{"b.example.org.", 40}}})
	resHost := runClientIn(t, filepath.Join(root, host), clientSpec{Server: server, Names: []clientQuery{{"host.example.net.", 25}}})
	if resA.Rcodes["RCodeSuccess"] != 230 || resA.Rcodes["RCodeNameError"] != 50 || resA.Rcodes["RCodeServerFailure"] != 20 || resB.Rcodes["RCodeSuccess"] != 40 || resHost.Rcodes["RCodeSuccess"] != 25 {
		t.Fatalf("clients saw rcodes A=%v B=%v host=%v", resA.Rcodes, resB.Rcodes, resHost.Rcodes)
	}

	f := waitFrame(t, stream, 50, func(f *isoobsv1.TopFrame) bool {
		return f.Total.GetQueries() >= 340 && f.Total.GetResponses() >= 340
	})
	if len(f.Rows) != 2 {
		t.Fatalf("rows: want pods A and B only (host process must not be attributed), got %v", f.Rows)
	}
	a, b := rowByUID(f, uidA), rowByUID(f, uidB)
	if a == nil || b == nil {
		t.Fatalf("rows by uid: A=%v B=%v", a, b)
	}
	if f.Total.Queries != 340 || f.Total.Responses != 340 || f.Node != "lab-node-1" {
		t.Errorf("total queries %d responses %d, want 340 340", f.Total.Queries, f.Total.Responses)
	}
	if a.Queries != 300 || a.Responses != 300 || a.Noerror != 230 || a.Nxdomain != 50 || a.Servfail != 20 || a.Refused != 0 || a.OtherRcode != 0 || a.Malformed != 0 {
		t.Errorf("pod A counts: q %d r %d noerror %d nx %d servfail %d refused %d other %d malformed %d",
			a.Queries, a.Responses, a.Noerror, a.Nxdomain, a.Servfail, a.Refused, a.OtherRcode, a.Malformed)
	}
	if a.Cgroup != "/"+podA || a.Node != "lab-node-1" || a.QueriesByType["A"] != 300 {
		t.Errorf("pod A identity: cgroup %q node %q types %v", a.Cgroup, a.Node, a.QueriesByType)
	}
	if b.Queries != 40 || b.Responses != 40 || b.Noerror != 40 || b.Cgroup != "/"+podB {
		t.Errorf("pod B: %v", b)
	}
	// The probe reports names in dotted form without the root's trailing dot.
	wantNames := map[string][2]uint64{
		"api.example.com":                {200, 0},
		nxPrefix + "missing.example.com": {50, 50},
		slowPrefix + "a.example.com":     {30, 0},
		failPrefix + "x.example.com":     {20, 0},
	}
	if len(a.TopNames) != 4 {
		t.Errorf("pod A top names %v", a.TopNames)
	}
	for i, n := range a.TopNames {
		w, ok := wantNames[n.Name]
		if !ok || n.Queries != w[0] || n.Nxdomain != w[1] || n.Error != 0 {
			t.Errorf("pod A name %d: %v, want %v exact", i, n, w)
		}
	}
	if len(a.TopNames) == 0 || a.TopNames[0].Name != "api.example.com" {
		t.Errorf("pod A top names %v", a.TopNames)
	}
	if len(b.TopNames) != 1 || b.TopNames[0].Name != "b.example.org" || b.TopNames[0].Queries != 40 {
		t.Errorf("pod B names %v", b.TopNames)
	}
	for _, n := range f.TopNames {
		if strings.Contains(n.Name, "host.example.net") {
			t.Errorf("host query name attributed: %v", n)
		}
	}
	// Latency: every response is in the histogram; p50 is a fast answer and p99 a slow one.
	// The kernel sees less time than the client (send later, receive earlier) but at least the
	// server's 20 ms delay for slow names; a log2 bucket has a factor-2 resolution.
	var hist uint64
	for _, n := range a.LatencyLog2Us {
		hist += n
	}
	if hist != 300 {
		t.Errorf("pod A latency histogram holds %d, want 300", hist)
	}
	fast := append(append(append([]int64{}, resA.LatenciesUS["api.example.com."]...), resA.LatenciesUS[nxPrefix+"missing.example.com."]...), resA.LatenciesUS[failPrefix+"x.example.com."]...)
	var fastMax, fastMin int64 = 0, math.MaxInt64
	for _, v := range fast {
		fastMax, fastMin = max(fastMax, v), min(fastMin, v)
	}
	slow := resA.LatenciesUS[slowPrefix+"a.example.com."]
	_, fastHi := log2Bucket(fastMax)
	slowLo, _ := log2Bucket(slowDelay.Microseconds())
	_, slowHi := log2Bucket(slow[len(slow)-1])
	if p50us := a.LatencyP50Ms * 1000; p50us <= 0 || p50us > fastHi {
		t.Errorf("p50 %.1f µs not within (0, %.0f] (client fast answers up to %d µs)", p50us, fastHi, fastMax)
	}
	if p99us := a.LatencyP99Ms * 1000; p99us < slowLo || p99us > slowHi {
		t.Errorf("p99 %.1f µs not within [%.0f, %.0f] (server delay %v, client slow answers %d..%d µs)", p99us, slowLo, slowHi, slowDelay, slow[0], slow[len(slow)-1])
	}
	t.Logf("pod A p50 %.3f ms p99 %.3f ms; client fast %d..%d µs, slow %d..%d µs", a.LatencyP50Ms, a.LatencyP99Ms, fastMin, fastMax, slow[0], slow[len(slow)-1])

	// The frame above can come from a tick before the host client's last queries were read
	// (the stream buffers frames; the host client runs last): wait for a tick that read them all.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if st, err = client.Status(ctx, &isoobsv1.StatusRequest{}); err != nil {
			t.Fatal(err)
		}
		if st.Counters["host_queries"] >= 25 || time.Now().After(deadline) {
			break
		}
	}
	if st.Counters["host_queries"] != 25 || st.PodsKnown != 2 || st.Counters["unresolved_cgroups"] != 0 {
		t.Errorf("status counters: host_queries %d pods_known %d unresolved %d", st.Counters["host_queries"], st.PodsKnown, st.Counters["unresolved_cgroups"])
	}

	// A stream counting since its own start (`--duration`) sees only what follows.
	since, err := client.Top(ctx, &isoobsv1.TopRequest{SinceStreamStart: true, TopNames: 3, GroupBy: isoobsv1.GroupBy_GROUP_BY_POD})
	if err != nil {
		t.Fatal(err)
	}
	first, err := since.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if first.Total.Queries != 0 {
		t.Errorf("since-stream-start frame before new traffic: %d queries", first.Total.Queries)
	}
	runClientIn(t, filepath.Join(root, ctrB), clientSpec{Server: server, Names: []clientQuery{{nxPrefix + "later.example.org.", 7}}})
	g := waitFrame(t, since, 50, func(f *isoobsv1.TopFrame) bool { return f.Total.GetResponses() >= 7 })
	gb := rowByUID(g, uidB)
	if g.Total.Queries != 7 || gb == nil || gb.Queries != 7 || gb.Nxdomain != 7 || len(gb.TopNames) != 1 || gb.TopNames[0].Name != nxPrefix+"later.example.org" || gb.TopNames[0].Nxdomain != 7 {
		t.Errorf("since-stream-start frame: total %d row %v", g.Total.Queries, gb)
	}
	if ga := rowByUID(g, uidA); ga != nil && ga.Queries != 0 {
		t.Errorf("pod A counted %d queries since the stream started", ga.Queries)
	}
	if !g.Since.AsTime().After(f.Since.AsTime()) {
		t.Errorf("since-stream-start frame since %v not after daemon start %v", g.Since.AsTime(), f.Since.AsTime())
	}
	// The daemon-scope stream now has 347 in total.
	waitFrame(t, stream, 50, func(f *isoobsv1.TopFrame) bool { return f.Total.GetQueries() == 347 && f.Total.GetResponses() == 347 })

	// Health and metrics: probes attached and ticking; pods without Kubernetes metadata are
	// exported under namespace/workload "unknown" (never per pod).
	hs := httptest.NewServer(d.HTTPHandler())
	defer hs.Close()
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
			t.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
	resp, err := http.Get(hs.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metricsText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`isoobs_dns_queries_total{namespace="unknown",workload="unknown"} 347`,
		`isoobs_dns_responses_total{namespace="unknown",rcode="NXDOMAIN",workload="unknown"} 57`,
		`isoobs_dns_host_queries_total 25`,
		`isoobs_probes_attached 2`,
		`isoobs_hubble_connected 0`, // no Hubble on this machine
	} {
		if !strings.Contains(string(metricsText), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(string(metricsText), uidA) || strings.Contains(string(metricsText), "api.example.com") {
		t.Error("/metrics carries a pod UID or a query name")
	}

	// Bad requests get a clear error.
	bad, err := client.Top(ctx, &isoobsv1.TopRequest{Sort: "loudness"})
	if err == nil {
		_, err = bad.Recv()
	}
	if err == nil || !strings.Contains(err.Error(), "qps|queries") {
		t.Errorf("bad sort key: %v", err)
	}
}
