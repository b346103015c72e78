package e2e

import (
	"bytes"
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/isoobs/isoobs/plugin/printers"
	"github.com/isoobs/isoobs/plugin/top"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/coredns"
	"github.com/isoobs/isoobs/testlab/dnsgen"
	"github.com/isoobs/isoobs/testlab/podnet"
)

// Two real CoreDNS replicas, one made slow (every slow.test answer 50 ms late, CoreDNS's
// erratic plugin). A pod asks both, a bystander only the fast one. Each client row names the
// servers its queries went to with exact counts per server; each replica's own row has its
// served rcodes and server-side latency; regrouped by server (what --group-by server shows)
// the slow replica stands out by its clients' mean latency and its own p50.
func TestWhichServerAnswered(t *testing.T) {
	lab := testlab.StartForTest(t, testlab.Options{Nodes: []string{nodeA}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, app := range []string{"dns-fast", "dns-slow", "asker", "bystander"} {
		if err := lab.Apply(ctx, pinnedDeployment(app, nodeA)); err != nil {
			t.Fatal(err)
		}
	}
	fastPod, slowPod := adopted(t, ctx, lab, "dns-fast"), adopted(t, ctx, lab, "dns-slow")
	asker, bystander := adopted(t, ctx, lab, "asker"), adopted(t, ctx, lab, "bystander")
	const slowBy = 50 * time.Millisecond
	fast, err := coredns.Start(ctx, fastPod, coredns.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fast.Stop)
	slow, err := coredns.Start(ctx, slowPod, coredns.Options{SlowBy: slowBy})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(slow.Stop)
	bin, err := dnsgen.BuildBinary(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a := startDaemon(t, lab, nodeA)

	fastAddr, slowAddr := netip.AddrPortFrom(fastPod.IPv4, 53), netip.AddrPortFrom(slowPod.IPv4, 53)
	run := func(p *podnet.Pod, server netip.AddrPort, count int64, names ...string) *dnsgen.Report {
		t.Helper()
		rep, err := dnsgen.RunInPod(ctx, p, bin, dnsgen.Config{Server: server, Names: names, Count: count, Concurrency: 2, Timeout: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Sent != uint64(count) || rep.Answered != rep.Sent {
			t.Fatalf("dnsgen in %s to %s: sent %d, answered %d of %d", p.Name, server, rep.Sent, rep.Answered, count)
		}
		return rep
	}
	toFast := run(asker, fastAddr, 50, "web.noerror.test", "nope.example", "x.servfail.test")
	toSlow := run(asker, slowAddr, 25, "a.slow.test", "b.slow.test", "c.slow.test", "d.slow.test", "x.servfail.test")
	byFast := run(bystander, fastAddr, 10, "web.noerror.test")
	if toSlow.RCodes.NoError != 20 || toSlow.RCodes.ServFail != 5 || toFast.RCodes.NXDomain == 0 || toFast.RCodes.ServFail == 0 {
		t.Fatalf("rcode mix: to the slow replica %+v, to the fast one %+v", toSlow.RCodes, toFast.RCodes)
	}

	var want counts
	want.addReport(toFast)
	want.addReport(toSlow)
	row := waitRow(t, a, asker, want)
	wantServer := func(r *isoobsv1.DNSRow, addr netip.AddrPort, rep *dnsgen.Report) *isoobsv1.DNSServer {
		t.Helper()
		for _, s := range r.Servers {
			if s.Address != addr.Addr().String() {
				continue
			}
			if s.Queries != rep.Sent || s.Answers != rep.Answered || s.Nxdomain != rep.RCodes.NXDomain || s.Servfail != rep.RCodes.ServFail || s.Timed != rep.Answered {
				t.Errorf("%s's server %s: %d queries, %d answers, %d NXDOMAIN, %d SERVFAIL, %d timed; want %d, %d, %d, %d, %d (every answer timed)",
					r.Pod, s.Address, s.Queries, s.Answers, s.Nxdomain, s.Servfail, s.Timed, rep.Sent, rep.Answered, rep.RCodes.NXDomain, rep.RCodes.ServFail, rep.Answered)
			}
			return s
		}
		t.Fatalf("%s's servers %v lack %s", r.Pod, r.Servers, addr)
		return nil
	}
	if len(row.Servers) != 2 || row.Servers[0].Address != fastAddr.Addr().String() {
		t.Fatalf("asker's servers %v: want the fast replica (50 queries) then the slow one (25)", row.Servers)
	}
	fs, ss := wantServer(row, fastAddr, toFast), wantServer(row, slowAddr, toSlow)
	// 20 of the slow replica's 25 answers came 50 ms late: its mean is at least 40 ms.
	slowMean := float64(ss.LatencySumUs) / float64(ss.Timed) / 1000
	fastMean := float64(fs.LatencySumUs) / float64(fs.Timed) / 1000
	if slowMean < 40 || fastMean >= slowMean/4 {
		t.Errorf("mean client-side latency: slow replica %.1f ms (want >= 40), fast %.1f ms (want < a quarter of it)", slowMean, fastMean)
	}
	by := waitRow(t, a, bystander, counts{Queries: 10, Responses: 10, NoError: 10})
	if len(by.Servers) != 1 {
		t.Fatalf("bystander's servers %v: want the fast replica only", by.Servers)
	}
	wantServer(by, fastAddr, byFast)

	// The replicas' own rows: what they answered, and how long they took.
	rows := a.rows(t)
	fr, sr := findRow(rows, fastPod), findRow(rows, slowPod)
	if fr == nil || sr == nil {
		t.Fatalf("no row for a replica: fast %v, slow %v", fr, sr)
	}
	fastServed := toFast.Sent + byFast.Sent
	if fr.ServedQueries != fastServed || fr.ServedResponses != fastServed || fr.ServedNxdomain != toFast.RCodes.NXDomain || fr.ServedServfail != toFast.RCodes.ServFail {
		t.Errorf("fast replica served %d queries, %d responses, %d NXDOMAIN, %d SERVFAIL; want %d, %d, %d, %d",
			fr.ServedQueries, fr.ServedResponses, fr.ServedNxdomain, fr.ServedServfail, fastServed, fastServed, toFast.RCodes.NXDomain, toFast.RCodes.ServFail)
	}
	if sr.ServedQueries != toSlow.Sent || sr.ServedResponses != toSlow.Sent || sr.ServedServfail != 5 || sr.ServedNxdomain != 0 {
		t.Errorf("slow replica served %d queries, %d responses, %d SERVFAIL, %d NXDOMAIN; want %d, %d, 5, 0",
			sr.ServedQueries, sr.ServedResponses, sr.ServedServfail, sr.ServedNxdomain, toSlow.Sent, toSlow.Sent)
	}
	// Server-side: every response timed (well below the sampling rate); exactly the 20
	// delayed ones at 2^15 µs (32.8 ms) or more.
	late := func(h []uint64) (all, slow uint64) {
		for i, n := range h {
			all += n
			if i >= 15 {
				slow += n
			}
		}
		return all, slow
	}
	if all, l := late(sr.ServedLatencyLog2Us); all != toSlow.Sent || l != 20 {
		t.Errorf("slow replica's server-side latency: %d responses timed, %d at 32.8 ms or more; want %d, 20", all, l, toSlow.Sent)
	}
	if all, l := late(fr.ServedLatencyLog2Us); all != fastServed || l != 0 {
		t.Errorf("fast replica's server-side latency: %d responses timed, %d at 32.8 ms or more; want %d, 0", all, l, fastServed)
	}

	// What --group-by server shows, from the same daemon frame.
	f := top.Merge([]*isoobsv1.TopFrame{{Node: nodeA, Rows: rows}}, top.MergeOptions{GroupBy: top.GroupByServer})
	get := func(addr netip.AddrPort) top.Row {
		for _, r := range f.Rows {
			if r.Server == addr.Addr().String() {
				return r
			}
		}
		t.Fatalf("no server row for %s in %+v", addr, f.Rows)
		return top.Row{}
	}
	if len(f.Rows) != 2 {
		t.Errorf("%d server rows, want 2: a dual-stack replica is one server (its IPv6 address was not used)", len(f.Rows))
	}
	fRow, sRow := get(fastAddr), get(slowAddr)
	if fRow.Pod != fastPod.Name || fRow.Pods != 2 || fRow.Queries != fastServed || fRow.ServedQueries != fastServed {
		t.Errorf("fast server row: pod %q, %d clients, %d queries, %d served; want %s, 2, %d, %d", fRow.Pod, fRow.Pods, fRow.Queries, fRow.ServedQueries, fastPod.Name, fastServed, fastServed)
	}
	if sRow.Pod != slowPod.Name || sRow.Pods != 1 || sRow.Queries != toSlow.Sent || sRow.ServFail != 5 || sRow.ServedServFail != 5 {
		t.Errorf("slow server row: pod %q, %d clients, %d queries, %d SERVFAIL (served %d); want %s, 1, %d, 5 (5)", sRow.Pod, sRow.Pods, sRow.Queries, sRow.ServFail, sRow.ServedServFail, slowPod.Name, toSlow.Sent)
	}
	if sRow.ServedLatencyP50Ms < 32 || fRow.ServedLatencyP99Ms >= 32 || sRow.LatencyAvgMs < 40 {
		t.Errorf("the slow replica does not stand out: its p50 %.1f ms and clients' mean %.1f ms, the fast one's p99 %.1f ms",
			sRow.ServedLatencyP50Ms, sRow.LatencyAvgMs, fRow.ServedLatencyP99Ms)
	}
	if want := float64(toSlow.Sent) / float64(toSlow.Sent+fastServed); sRow.Share != want {
		t.Errorf("slow replica's share %.4f, want %.4f", sRow.Share, want)
	}
	var table bytes.Buffer
	if err := printers.WriteTable(&table, f.SortedLimited(top.SortQueries, 0), false, false); err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl isoobs top dns --group-by server:\n%s", table.String())
	// --server keeps the clients of one replica, named by pod.
	onlySlow := top.Merge([]*isoobsv1.TopFrame{{Node: nodeA, Rows: rows}}, top.MergeOptions{GroupBy: top.GroupByPod, Server: slowPod.Namespace + "/" + slowPod.Name})
	if len(onlySlow.Rows) != 1 || onlySlow.Rows[0].Pod != asker.Name {
		t.Errorf("--server %s/%s kept %d rows (%+v), want only %s", slowPod.Namespace, slowPod.Name, len(onlySlow.Rows), onlySlow.Rows, asker.Name)
	}
}
