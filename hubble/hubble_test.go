package hubble_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/isoobs/isoobs/hubble"
	flowpb "github.com/isoobs/isoobs/proto/observer/flow"
	"github.com/isoobs/isoobs/testlab/hubblereplay"
)

var (
	crawler = hubblereplay.Pod{Namespace: "tenant-jobs", Name: "crawler-1", Workload: "crawler", WorkloadKind: "Deployment", Identity: 48213, Labels: map[string]string{"app": "crawler"}, IP: "10.244.1.17"}
	coredns = hubblereplay.Pod{Namespace: "kube-system", Name: "coredns-1", Workload: "coredns", WorkloadKind: "Deployment", Identity: 102, IP: "10.244.0.5"}
	coreapi = hubblereplay.Pod{Namespace: "tenant-jobs", Name: "coreapi-1", Workload: "coreapi", WorkloadKind: "Deployment", Identity: 48999, IP: "10.244.1.30"}
	key     = hubble.PodKey{Namespace: "tenant-jobs", Pod: "crawler-1"}
)

func TestAggregatorDNS(t *testing.T) {
	a := hubble.NewAggregator(hubble.AggregatorConfig{})
	t0 := time.Now()
	x := hubblereplay.DNSExchange{Node: "n1", Time: t0, Client: crawler, Server: coredns, ClientPort: 5000}
	feed := func(name string, rcode uint32, lat time.Duration, denied bool, n int) {
		for range n {
			x.Query, x.Rcode, x.Latency, x.Denied = name, rcode, lat, denied
			for _, f := range x.Flows() {
				a.Observe(f)
			}
		}
	}
	feed("jobs.example.com.", 0, 900*time.Microsecond, false, 10) // bucket 9: [512, 1024) µs
	feed("nope.example.com.", 3, 3*time.Millisecond, false, 4)    // bucket 11
	feed("x.example.com.", 2, 0, false, 1)
	feed("evil.example.net.", 0, 0, true, 3)
	// An L3/L4 policy drop of a query to port 53: DNS denied by policy too.
	a.Observe(hubblereplay.Drop("n1", t0, crawler, coredns, "UDP", 53, flowpb.DropReason_POLICY_DENIED))
	// A drop to another port is a drop, not DNS.
	a.Observe(hubblereplay.Drop("n1", t0, crawler, coreapi, "TCP", 8080, flowpb.DropReason_POLICY_DENIED))
	for _, f := range hubblereplay.HTTPExchange("n1", t0, crawler, coreapi, "GET", "/", 503, 2*time.Millisecond) {
		a.Observe(f)
	}

	p, ok := a.Pod(key)
	if !ok {
		t.Fatal("crawler not aggregated")
	}
	d := p.DNS
	if d.Queries != 19 || d.Responses != 15 || d.PolicyDenied != 4 || d.Rcode[hubble.RcodeNoError] != 10 || d.Rcode[hubble.RcodeNXDomain] != 4 || d.Rcode[hubble.RcodeServFail] != 1 {
		t.Errorf("dns %+v", d)
	}
	if d.ProxyLatencyLog2US[9] != 10 || d.ProxyLatencyLog2US[11] != 4 {
		t.Errorf("proxy latency buckets %v", d.ProxyLatencyLog2US)
	}
	if p.Identity != 48213 || p.Workload != "crawler" || p.WorkloadKind != "Deployment" || p.Node != "n1" || hubble.LabelMap(p.Labels)["app"] != "crawler" || len(hubble.LabelMap(p.Labels)) != 1 {
		t.Errorf("endpoint %+v", p.Endpoint)
	}
	if p.Drops != 2 || p.DropsByReason["POLICY_DENIED"] != 2 {
		t.Errorf("drops %d %v", p.Drops, p.DropsByReason)
	}
	if p.HTTP.Requests != 1 || p.HTTP.Responses != 1 || p.HTTP.StatusClass[5] != 1 || p.HTTP.LatencyLog2US[10] != 1 {
		t.Errorf("http %+v", p.HTTP)
	}
	if s, _ := a.Pod(hubble.PodKey{Namespace: "tenant-jobs", Pod: "coreapi-1"}); s.HTTP.Served != 1 {
		t.Errorf("coreapi served %d", s.HTTP.Served)
	}
	names := map[string][2]uint64{}
	a.DrainNames(func(k hubble.PodKey, name string, q, nx uint64) {
		if k != key {
			t.Errorf("names of %v", k)
		}
		names[name] = [2]uint64{q, nx}
	})
	want := map[string][2]uint64{"jobs.example.com": {10, 0}, "nope.example.com": {4, 4}, "x.example.com": {1, 0}, "evil.example.net": {3, 0}}
	if len(names) != len(want) {
		t.Errorf("names %v", names)
	}
	for n, w := range want {
		if names[n] != w {
			t.Errorf("name %s: %v want %v", n, names[n], w)
		}
	}
	a.DrainNames(func(hubble.PodKey, string, uint64, uint64) { t.Error("drained twice") })
	c := a.Counters()
	if c.Flows != 37 || c.DNSFlows != 33 || c.DropFlows != 2 || c.HTTPFlows != 2 || c.SkippedTotal() != 0 || c.DropsByReason["POLICY_DENIED"] != 2 {
		t.Errorf("counters %+v", c)
	}
}

// Malformed or partial flows are skipped and counted, never attributed, never a panic.
// A name with control bytes (Hubble passes on what a pod sent) is drained escaped.
func TestAggregatorEscapesNames(t *testing.T) {
	a := hubble.NewAggregator(hubble.AggregatorConfig{})
	for _, f := range (hubblereplay.DNSExchange{Node: "n1", Time: time.Now(), Client: crawler, Server: coredns, Query: "x\x1b]0;pwned\x07\nforged row.example.com."}).Flows() {
		a.Observe(f)
	}
	var got []string
	a.DrainNames(func(_ hubble.PodKey, name string, _, _ uint64) { got = append(got, name) })
	if want := `x\027]0;pwned\007\010forged\032row.example.com`; len(got) != 1 || got[0] != want {
		t.Fatalf("names %q, want [%q]", got, want)
	}
}

func TestAggregatorSkipsMalformed(t *testing.T) {
	a := hubble.NewAggregator(hubble.AggregatorConfig{})
	good := hubblereplay.DNSExchange{Node: "n1", Time: time.Now(), Client: crawler, Server: coredns, Query: "a.example.com."}.Flows()
	noSource := func() *flowpb.Flow { c := clone(good[0]); c.Source = nil; return c }()
	worldSource := func() *flowpb.Flow {
		c := clone(good[0])
		c.Source = &flowpb.Endpoint{Identity: 2, Labels: []string{"reserved:world"}}
		return c
	}()
	noL7 := func() *flowpb.Flow { c := clone(good[0]); c.L7 = nil; return c }()
	badVerdict := func() *flowpb.Flow { c := clone(good[0]); c.Verdict = flowpb.Verdict(4242); return c }()
	unknownVerdict := func() *flowpb.Flow { c := clone(good[0]); c.Verdict = flowpb.Verdict_VERDICT_UNKNOWN; return c }()
	sample := func() *flowpb.Flow {
		c := clone(good[0])
		c.L7 = &flowpb.Layer7{Type: flowpb.L7FlowType_SAMPLE, Record: c.L7.Record}
		return c
	}()
	kafka := func() *flowpb.Flow {
		c := clone(good[0])
		c.L7 = &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST}
		return c
	}()
	for _, f := range []*flowpb.Flow{nil, noSource, worldSource, noL7, badVerdict, unknownVerdict, sample, kafka, {}} {
		a.Observe(f)
	}
	a.Observe(good[0])
	c := a.Counters()
	want := map[string]uint64{hubble.SkipNilFlow: 1, hubble.SkipNoSourcePod: 2, hubble.SkipNoL7Record: 1, hubble.SkipUnknownVerdict: 3, hubble.SkipUnknownL7Type: 1, hubble.SkipOtherL7: 1}
	for k, v := range want {
		if c.Skipped[k] != v {
			t.Errorf("skipped %s = %d, want %d (all: %v)", k, c.Skipped[k], v, c.Skipped)
		}
	}
	if c.Flows != 10 || c.Pods != 1 {
		t.Errorf("flows %d pods %d", c.Flows, c.Pods)
	}
	if p, _ := a.Pod(key); p.DNS.Queries != 1 {
		t.Errorf("only the good flow counts: %+v", p.DNS)
	}
}

func TestAggregatorBounds(t *testing.T) {
	a := hubble.NewAggregator(hubble.AggregatorConfig{MaxPods: 2, MaxPendingNames: 3})
	for i := range 5 {
		p := crawler
		p.Name = "crawler-" + string(rune('a'+i))
		for j := range 4 {
			a.Observe(hubblereplay.DNSExchange{Client: p, Server: coredns, Query: string(rune('a'+j)) + ".example.com."}.Flows()[0])
		}
	}
	c := a.Counters()
	if c.Pods != 2 || c.PodsOverflow != 12 || c.NamesOverflow != 5 {
		t.Errorf("pods %d overflow %d names overflow %d", c.Pods, c.PodsOverflow, c.NamesOverflow)
	}
	if n := a.Forget(time.Now().Add(time.Second)); n != 2 || a.Counters().Pods != 0 {
		t.Errorf("forget %d", n)
	}
}

func serveReplay(t *testing.T, path string, s *hubblereplay.Server) *grpc.Server {
	t.Helper()
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	s.Register(gs)
	go func() { _ = gs.Serve(lis) }()
	return gs
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The client follows the replay server, reports lost events, survives the server going away
// and reconnects when it returns.
func TestClientFollowsAndReconnects(t *testing.T) {
	dir, err := os.MkdirTemp("", "hubble-client")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "hubble.sock")
	agg := hubble.NewAggregator(hubble.AggregatorConfig{})
	c, err := hubble.NewClient(hubble.ClientConfig{Server: "unix://" + sock, BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond}, agg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// No socket yet: not connected, and the error says why.
	waitFor(t, "a failed attempt", func() bool { return c.Status().LastError != "" })
	if st := c.Status(); st.Connected || !strings.Contains(st.LastError, "no such file") || !strings.Contains(st.LastError, "--hubble-server") {
		t.Errorf("status without a socket: %+v", st)
	}

	srv := hubblereplay.NewServer(hubblereplay.Options{})
	// Flows buffered before the client follows are history: follow mode does not replay them.
	srv.PublishFlows(hubblereplay.DNSExchange{Client: crawler, Server: coredns, Query: "old.example.com."}.Flows()...)
	gs := serveReplay(t, sock, srv)
	waitFor(t, "connection", func() bool { _, f := srv.Streams(); return f == 1 && c.Status().Connected })
	srv.PublishFlows(hubblereplay.DNSExchange{Client: crawler, Server: coredns, Query: "a.example.com."}.Flows()...)
	// Forwarded L3/L4 flows do not pass the client's filter.
	fwd := hubblereplay.Drop("n1", time.Now(), crawler, coreapi, "TCP", 80, 0)
	fwd.Verdict, fwd.EventType = flowpb.Verdict_FORWARDED, &flowpb.CiliumEventType{Type: hubblereplay.EventTypeTrace}
	srv.PublishFlows(fwd)
	srv.Publish(hubblereplay.Lost("n1", time.Now(), flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 42))
	waitFor(t, "flows and lost events", func() bool { return agg.Counters().LostEvents == 42 })
	if p, _ := agg.Pod(key); p.DNS.Queries != 1 || p.DNS.Responses != 1 {
		t.Errorf("after first flows: %+v", p.DNS)
	}
	if st := c.Status(); st.FlowsReceived != 2 || !st.Connected {
		t.Errorf("status %+v", st)
	}
	if cs := agg.Counters(); cs.Ignored != 0 || cs.LostBySource["PERF_EVENT_RING_BUFFER"] != 42 {
		t.Errorf("counters %+v", cs)
	}

	// Hubble goes away.
	gs.Stop()
	waitFor(t, "disconnect", func() bool { return !c.Status().Connected })
	if st := c.Status(); st.LastError == "" {
		t.Errorf("no error after the server left: %+v", st)
	}
	// ... and comes back on the same socket.
	srv2 := hubblereplay.NewServer(hubblereplay.Options{})
	os.Remove(sock)
	gs2 := serveReplay(t, sock, srv2)
	defer gs2.Stop()
	waitFor(t, "reconnect", func() bool { _, f := srv2.Streams(); return f == 1 && c.Status().Connected })
	srv2.PublishFlows(hubblereplay.DNSExchange{Client: crawler, Server: coredns, Query: "b.example.com.", Rcode: 3}.Flows()...)
	waitFor(t, "flows after reconnect", func() bool { p, _ := agg.Pod(key); return p.DNS.Responses == 2 })
	p, _ := agg.Pod(key)
	if p.DNS.Queries != 2 || p.DNS.Rcode[hubble.RcodeNXDomain] != 1 {
		t.Errorf("after reconnect: %+v", p.DNS)
	}
	if st := c.Status(); st.Reconnects < 1 || st.FlowsReceived != 4 {
		t.Errorf("status after reconnect %+v", st)
	}
}

func TestClientConfigErrors(t *testing.T) {
	agg := hubble.NewAggregator(hubble.AggregatorConfig{})
	for _, tc := range []struct {
		cfg  hubble.ClientConfig
		want string
	}{
		{hubble.ClientConfig{Server: "relay:80", TLS: hubble.TLSConfig{CAFiles: []string{"/x"}}}, "without --hubble-tls"},
		{hubble.ClientConfig{Server: "relay:80", TLS: hubble.TLSConfig{Enabled: true, CAFiles: []string{"/nonexistent/ca.crt"}}}, "/nonexistent/ca.crt"},
		{hubble.ClientConfig{Server: "relay:80", TLS: hubble.TLSConfig{Enabled: true, CertFile: "/a"}}, "go together"},
		{hubble.ClientConfig{Server: "unix:///x.sock", TLS: hubble.TLSConfig{Enabled: true}}, "unix socket"},
	} {
		if _, err := hubble.NewClient(tc.cfg, agg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func clone(f *flowpb.Flow) *flowpb.Flow { return proto.Clone(f).(*flowpb.Flow) }
