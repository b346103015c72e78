package daemon

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/isoobs/isoobs/bpf"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

func TestNameFilterMatch(t *testing.T) {
	for _, tc := range []struct {
		expr, zone, name string
		want             bool
	}{
		{"", "example.com", "example.com", true},
		{"", "example.com", "a.b.Example.COM.", true},
		{"", "example.com.", "a.example.com", true},
		{"", "*.example.com", "a.example.com", true},
		{"", "example.com", "badexample.com", false},
		{"", "example.com", "example.com.evil.org", false},
		{"", "example.com", "com", false},
		{"^nx-", "", "NX-1.example.com", true},
		{"^nx-", "", "a.nx-1.example.com", false},
		{`crawl\.jobs`, "example", "x1.crawl.jobs.example.", true},
		{`crawl\.jobs`, "example.org", "x1.crawl.jobs.example", false},
	} {
		f, err := newNameFilter(tc.expr, tc.zone)
		if err != nil {
			t.Fatalf("%q %q: %v", tc.expr, tc.zone, err)
		}
		if got := f.match(tc.name); got != tc.want {
			t.Errorf("regex %q zone %q name %q: match %v, want %v", tc.expr, tc.zone, tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct{ expr, zone, want string }{
		{"(", "", "not an RE2 expression"},
		{`(?=x)`, "", "not an RE2 expression"}, // look-ahead is not RE2
		{strings.Repeat("a", maxNameRegex+1), "", "more than the 512"},
		{"", "a..b", "not a domain name"},
		{"", ".", "zone is empty"},
	} {
		if _, err := newNameFilter(tc.expr, tc.zone); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("regex %.20q zone %q: %v, want %q", tc.expr, tc.zone, err, tc.want)
		}
	}
}

// filterStream opens a Top stream of req on the fixture's collector, as server.Top does.
func filterStream(t *testing.T, f *fixture, req *isoobsv1.TopRequest) *topQuery {
	t.Helper()
	q, err := newTopQuery(req, f.cfg.Interval)
	if err != nil {
		t.Fatal(err)
	}
	f.c.startStream(q)
	t.Cleanup(func() { f.c.removeSink(q.sink) })
	return q
}

// TestNameFilterCountsOnlyMatchingNames: under a name filter, rows, totals and name lists
// hold exactly the queries for matching names asked since the stream started, under every
// grouping; pods that asked none are not rows.
func TestNameFilterCountsOnlyMatchingNames(t *testing.T) {
	f := newFixture(t, nil)
	f.c.tick(f.now)
	// Before the stream: not counted.
	f.src.query(101, "a.example.com", 1000, bpf.RcodeNoError, time.Millisecond)
	f.step()
	zone := filterStream(t, f, &isoobsv1.TopRequest{Zone: "example.com", TopNames: 5})
	regex := filterStream(t, f, &isoobsv1.TopRequest{NameRegex: `^nx\.`, GroupBy: isoobsv1.GroupBy_GROUP_BY_WORKLOAD})
	qname := filterStream(t, f, &isoobsv1.TopRequest{Zone: "example.com", GroupBy: isoobsv1.GroupBy_GROUP_BY_QNAME})
	const ticks = 20
	for range ticks {
		f.src.query(101, "a.example.com", 50, bpf.RcodeNoError, time.Millisecond)
		f.src.query(102, "nx.example.com", 10, bpf.RcodeNXDomain, time.Millisecond)
		f.src.query(101, "b.other.org", 30, bpf.RcodeNoError, time.Millisecond)
		f.src.query(201, "b.other.org", 70, bpf.RcodeNoError, time.Millisecond) // crawler-b: no match
		f.src.query(301, "db.example.com", 5, bpf.RcodeNoError, time.Millisecond)
		f.src.query(301, "nx.example.org", 2, bpf.RcodeNXDomain, time.Millisecond)
		f.step()
	}

	fr := f.c.frame(zone)
	if len(fr.Rows) != 2 || rowByPod(fr, "crawler-7d9f-b") != nil {
		t.Fatalf("zone example.com: rows %v, want crawler-a and coreapi only", fr.Rows)
	}
	cr, api := rowByPod(fr, "crawler-7d9f-a"), rowByPod(fr, "coreapi-0")
	if cr.Queries != ticks*60 || cr.Nxdomain != ticks*10 || cr.Qps != 60 || cr.NxdomainRate != 10 {
		t.Errorf("crawler-a: queries %d nxdomain %d qps %v nx/s %v, want %d %d 60 10", cr.Queries, cr.Nxdomain, cr.Qps, cr.NxdomainRate, ticks*60, ticks*10)
	}
	if len(cr.TopNames) != 2 || cr.TopNames[0].Name != "a.example.com" || cr.TopNames[0].Queries != ticks*50 || cr.TopNames[1].Queries != ticks*10 {
		t.Errorf("crawler-a names %v", cr.TopNames)
	}
	if api.Queries != ticks*5 || api.Nxdomain != 0 || len(api.TopNames) != 1 {
		t.Errorf("coreapi: %d queries %d nx names %v, want %d 0 [db.example.com]", api.Queries, api.Nxdomain, api.TopNames, ticks*5)
	}
	if fr.Total.Queries != ticks*65 || len(fr.TopNames) != 3 {
		t.Errorf("total %d queries, names %v; want %d and 3 names", fr.Total.Queries, fr.TopNames, ticks*65)
	}
	if !fr.Since.AsTime().Equal(f.now.Add(-ticks * time.Second)) {
		t.Errorf("since %v, want the stream's start %v", fr.Since.AsTime(), f.now.Add(-ticks*time.Second))
	}
	if fr.NameOverflow != 0 {
		t.Errorf("name overflow %d", fr.NameOverflow)
	}

	fr = f.c.frame(regex)
	if len(fr.Rows) != 2 {
		t.Fatalf("regex ^nx\\. by workload: rows %v", fr.Rows)
	}
	for _, r := range fr.Rows {
		want := map[string]uint64{"crawler": ticks * 10, "coreapi": ticks * 2}[r.Workload]
		if r.Queries != want || r.Nxdomain != want {
			t.Errorf("workload %s: %d queries %d nx, want %d", r.Workload, r.Queries, r.Nxdomain, want)
		}
	}

	fr = f.c.frame(qname)
	got := map[string]uint64{}
	for _, r := range fr.Rows {
		got[r.Qname] = r.Queries
	}
	if len(got) != 3 || got["a.example.com"] != ticks*50 || got["nx.example.com"] != ticks*10 || got["db.example.com"] != ticks*5 {
		t.Errorf("qname rows %v", got)
	}

	// The name table overflowed after the stream started: said, with the bound.
	f.c.stats.NameOverflow = zone.overflowAt + 7
	fr = f.c.frame(zone)
	if fr.NameOverflow != 7 || !strings.Contains(strings.Join(fr.Warnings, "\n"), "low by up to 7") {
		t.Errorf("overflow %d warnings %q", fr.NameOverflow, fr.Warnings)
	}
}

// TestLookBackShowsStoppedFlood: a flood that stopped minutes before the stream opens is
// counted exactly under since, with when it started and ended.
func TestLookBackShowsStoppedFlood(t *testing.T) {
	f := newFixture(t, nil) // default retention: 15 minutes
	t0 := f.now
	f.c.tick(f.now)
	for i := 1; i <= 700; i++ {
		if i > 100 && i <= 400 {
			f.src.query(101, "x.crawl.example", 20, bpf.RcodeNXDomain, time.Millisecond)
			f.src.query(102, "y.crawl.example", 10, bpf.RcodeNoError, time.Millisecond)
		}
		f.src.query(301, "db.svc.cluster.local", 1, bpf.RcodeNoError, time.Millisecond)
		f.step()
	}
	look := func(d time.Duration, by isoobsv1.GroupBy) *isoobsv1.TopFrame {
		return f.frame(t, &isoobsv1.TopRequest{Since: durationpb.New(d), GroupBy: by, TopNames: 2})
	}

	fr := look(10*time.Minute, isoobsv1.GroupBy_GROUP_BY_POD)
	if !fr.Since.AsTime().Equal(t0.Add(100*time.Second)) || fr.Interval.AsDuration() != 10*time.Minute {
		t.Errorf("10m look-back covers %v for %v, want from %v", fr.Since.AsTime(), fr.Interval.AsDuration(), t0.Add(100*time.Second))
	}
	cr := rowByPod(fr, "crawler-7d9f-a")
	if cr == nil {
		t.Fatalf("no crawler row in the 10m look-back: %v", fr.Rows)
	}
	if cr.Queries != 9000 || cr.Nxdomain != 6000 || cr.Noerror != 3000 || cr.Responses != 9000 || cr.Qps != 15 {
		t.Errorf("crawler over 10m: queries %d nx %d noerror %d responses %d qps %v, want 9000 6000 3000 9000 15", cr.Queries, cr.Nxdomain, cr.Noerror, cr.Responses, cr.Qps)
	}
	if !cr.FirstSeen.AsTime().Equal(t0.Add(100*time.Second)) || !cr.LastSeen.AsTime().Equal(t0.Add(400*time.Second)) {
		t.Errorf("crawler seen %v..%v, want %v..%v", cr.FirstSeen.AsTime(), cr.LastSeen.AsTime(), t0.Add(100*time.Second), t0.Add(400*time.Second))
	}
	if cr.TopNames[0].Name != "x.crawl.example" {
		t.Errorf("crawler names %v", cr.TopNames)
	}
	api := rowByPod(fr, "coreapi-0")
	if api.Queries != 600 || !api.FirstSeen.AsTime().Equal(t0.Add(100*time.Second)) || !api.LastSeen.AsTime().Equal(t0.Add(700*time.Second)) {
		t.Errorf("coreapi: %d queries seen %v..%v, want 600 over the whole window", api.Queries, api.FirstSeen.AsTime(), api.LastSeen.AsTime())
	}
	if fr.Total.Queries != 9600 || !fr.Total.FirstSeen.AsTime().Equal(t0.Add(100*time.Second)) {
		t.Errorf("total %d queries first seen %v", fr.Total.Queries, fr.Total.FirstSeen.AsTime())
	}

	// The last 5 minutes: the flood had stopped; only coreapi, at its exact rate.
	fr = look(5*time.Minute, isoobsv1.GroupBy_GROUP_BY_POD)
	if len(fr.Rows) != 1 || fr.Rows[0].Pod != "coreapi-0" || fr.Rows[0].Queries != 300 || fr.Rows[0].Qps != 1 {
		t.Errorf("5m look-back rows %v, want coreapi alone with 300 queries at 1 qps", fr.Rows)
	}
	// The last minute, from the fine history.
	fr = look(time.Minute, isoobsv1.GroupBy_GROUP_BY_WORKLOAD)
	if len(fr.Rows) != 1 || fr.Rows[0].Queries != 60 || !fr.Rows[0].LastSeen.AsTime().Equal(t0.Add(700*time.Second)) || !fr.Rows[0].FirstSeen.AsTime().Equal(t0.Add(640*time.Second)) {
		t.Errorf("1m look-back rows %v", fr.Rows)
	}
	// All of it, by namespace: more than the 700 s counted is asked, and said.
	fr = look(15*time.Minute, isoobsv1.GroupBy_GROUP_BY_NAMESPACE)
	var total uint64
	for _, r := range fr.Rows {
		total += r.Queries
	}
	if total != 9000+700 {
		t.Errorf("15m look-back by namespace: %d queries, want %d", total, 9000+700)
	}
	if !strings.Contains(strings.Join(fr.Warnings, "\n"), "history covers 11m40s of the 15m0s asked") {
		t.Errorf("warnings %q", fr.Warnings)
	}
}

func TestTopRequestLookBackAndFilterChecks(t *testing.T) {
	for _, tc := range []struct {
		req  *isoobsv1.TopRequest
		want string
	}{
		{&isoobsv1.TopRequest{Since: durationpb.New(time.Minute), SinceStreamStart: true}, "ask for one of them"},
		{&isoobsv1.TopRequest{Since: durationpb.New(time.Minute), Zone: "example.com"}, "cannot be combined with a name filter"},
		{&isoobsv1.TopRequest{Since: durationpb.New(time.Minute), GroupBy: isoobsv1.GroupBy_GROUP_BY_QNAME}, "cannot group by qname"},
		{&isoobsv1.TopRequest{Since: durationpb.New(-time.Minute)}, "positive look-back"},
		{&isoobsv1.TopRequest{NameRegex: "a(b"}, "not an RE2 expression"},
	} {
		if _, err := newTopQuery(tc.req, time.Second); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.req, err, tc.want)
		}
	}
	if err := checkTopBounds(&isoobsv1.TopRequest{Since: durationpb.New(16 * time.Minute)}, 15*time.Minute); err == nil || !strings.Contains(err.Error(), "since 16m0s is longer than the history this daemon keeps (--retention 15m0s)") {
		t.Errorf("since past retention: %v", err)
	}
}
