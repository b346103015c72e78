package daemon

import (
	"fmt"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/isoobs/isoobs/daemon/window"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/testlab/hubblereplay"
)

// httpHistoryBatch replays n requests to httpServer: every 20th answered 503, every 20th+7 404,
// paths /jobs/{id} (even) and POST /applicants (odd), latency 1 ms + i µs.
func httpHistoryBatch(a *httpAgg, n int, at time.Time) (s5xx, s4xx uint64) {
	for i := 0; i < n; i++ {
		x := hubblereplay.HTTPRequest{Node: "lab-node-a", Time: at, Client: httpClient, Server: httpServer, ClientPort: uint32(20000 + i),
			Code: 200, Latency: time.Millisecond + time.Duration(i)*time.Microsecond, URL: fmt.Sprintf("http://coreapi/jobs/%d", i)}
		if i%2 == 1 {
			x.Method, x.URL = "POST", "http://coreapi/applicants"
		}
		switch i % 20 {
		case 0:
			x.Code, s5xx = 503, s5xx+1
		case 7:
			x.Code, s4xx = 404, s4xx+1
		}
		for _, f := range x.Flows() {
			a.observe(f)
		}
	}
	return s5xx, s4xx
}

// TestHTTPLookBackCountsExactly: the test owns the clock (1 s ticks, the default 15 min
// retention: every tick for the last minute, every 10 s before). 300 requests arrive before tick
// 10, 60 before tick 250, 200 before tick 401; at tick 430 a 1 m look-back counts exactly the
// last 200 (10 5xx, 10 4xx, both paths, every latency), 5 m the last 260 (from a coarse sample)
// and 15 m all 560; first/last seen are the kept ticks around the first and last batch; rows idle over the
// look-back are left out.
func TestHTTPLookBackCountsExactly(t *testing.T) {
	cfg := &Config{MaxTrackedPods: 16, Retention: 15 * time.Minute, Interval: time.Second}
	a := newHTTPAgg(cfg)
	t0 := time.Date(2026, 12, 4, 3, 0, 0, 0, time.UTC)
	now := t0
	a.now = func() time.Time { return now }
	clock := window.NewTieredClock(window.LayoutFor(cfg.Interval, cfg.Retention))
	at := func(tick int) time.Time { return t0.Add(time.Duration(tick) * time.Second) }
	batches := map[int]int{10: 300, 250: 60, 401: 200} // tick -> requests that arrived just before it
	var want5xx, want4xx = map[int]uint64{}, map[int]uint64{}
	for tick := 0; tick <= 430; tick++ {
		now = at(tick).Add(-time.Millisecond)
		if n := batches[tick]; n > 0 {
			want5xx[tick], want4xx[tick] = httpHistoryBatch(a, n, now)
		}
		now = at(tick)
		clock.Tick(now)
		a.record(uint64(tick), clock.Layout())
	}
	if want5xx[401] != 10 || want4xx[401] != 10 || want5xx[10] != 15 || want4xx[10] != 15 {
		t.Fatalf("test set: 5xx %v 4xx %v", want5xx, want4xx)
	}
	q, err := newHTTPQuery(&isoobsv1.TopRequest{}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		d                  time.Duration
		fromTick           int
		requests, s5, s4   uint64
		firstTick, lastTck int
	}{
		{time.Minute, 370, 200, 10, 10, 400, 401},
		{5 * time.Minute, 130, 260, 10 + 3, 10 + 3, 240, 401}, // 60 requests: 3 5xx, 3 4xx; first seen at the coarse sample before
		{15 * time.Minute, 0, 560, 15 + 3 + 10, 15 + 3 + 10, 0, 401},
	} {
		lb := a.lookBack(clock, c.d, q)
		if !lb.ok || !lb.from.Equal(at(c.fromTick)) || !lb.to.Equal(at(430)) || lb.elapsed != time.Duration(430-c.fromTick)*time.Second {
			t.Fatalf("%s: window [%v, %v] (%s), want from tick %d", c.d, lb.from, lb.to, lb.elapsed, c.fromTick)
		}
		if len(lb.rows) != 1 {
			t.Fatalf("%s: %d rows, want coreapi's server row", c.d, len(lb.rows))
		}
		r := lb.rows[0]
		var latency, paths uint64
		for _, n := range r.LatencyCounts {
			latency += n
		}
		for _, p := range r.Paths {
			paths += p.Requests
		}
		wantRate := float64(c.requests) / lb.elapsed.Seconds()
		if r.Pod != httpServer.Name || r.Client || r.Requests != c.requests || r.Responses != c.requests || r.Status_5Xx != c.s5 || r.Status_4Xx != c.s4 ||
			r.Status_2Xx != c.requests-c.s5-c.s4 || latency != c.requests || paths != c.requests || len(r.Paths) != 2 || r.RequestsPerSecond != wantRate {
			t.Errorf("%s: %d requests %d responses 5xx %d 4xx %d 2xx %d, latency %d, paths %d in %d, %.3f/s; want %d requests, 5xx %d, 4xx %d, %.3f/s",
				c.d, r.Requests, r.Responses, r.Status_5Xx, r.Status_4Xx, r.Status_2Xx, latency, paths, len(r.Paths), r.RequestsPerSecond, c.requests, c.s5, c.s4, wantRate)
		}
		if r.FirstSeen == nil || !r.FirstSeen.AsTime().Equal(at(c.firstTick)) || !r.LastSeen.AsTime().Equal(at(c.lastTck)) {
			t.Errorf("%s: first/last seen %v %v, want ticks %d, %d", c.d, r.FirstSeen.AsTime(), r.LastSeen.AsTime(), c.firstTick, c.lastTck)
		}
	}
	// Client rows have their history too.
	lb := a.lookBack(clock, time.Minute, &httpQuery{req: &isoobsv1.TopRequest{HttpClients: true}, selector: q.selector})
	if len(lb.rows) != 1 || lb.rows[0].Pod != httpClient.Name || lb.rows[0].Requests != 200 || lb.rows[0].Status_5Xx != 10 {
		t.Errorf("client look-back: %+v", lb.rows)
	}
	// 40 more ticks without requests: the last minute then has none, and no row.
	for tick := 431; tick <= 470; tick++ {
		now = at(tick)
		clock.Tick(now)
		a.record(uint64(tick), clock.Layout())
	}
	if lb := a.lookBack(clock, time.Minute, q); len(lb.rows) != 0 {
		t.Errorf("an idle minute: %+v", lb.rows)
	}
	if lb := a.lookBack(clock, 5*time.Minute, q); len(lb.rows) != 1 || lb.rows[0].Requests != 260 {
		t.Errorf("5 m after the idle minute: %+v", lb.rows)
	}
}

// TestHTTPHistorySlotSize pins what a history slot costs (the figure in http_history.go).
func TestHTTPHistorySlotSize(t *testing.T) {
	if n := unsafe.Sizeof(httpSample{}); n != 96 {
		t.Errorf("httpSample is %d bytes, http_history.go says 96", n)
	}
	if l := window.LayoutFor(time.Second, 15*time.Minute); l.Samples() != 153 {
		t.Errorf("%d slots per row at the defaults, http_history.go says 153", l.Samples())
	}
}

// TestHTTPLookBackBeforeTwoTicks: with one tick of history there is no window.
func TestHTTPLookBackBeforeTwoTicks(t *testing.T) {
	a := newTestHTTPAgg()
	clock := window.NewTieredClock(window.LayoutFor(time.Second, time.Hour))
	httpHistoryBatch(a, 5, time.Now())
	clock.Tick(time.Now())
	a.record(0, clock.Layout())
	q, _ := newHTTPQuery(&isoobsv1.TopRequest{}, "")
	if lb := a.lookBack(clock, time.Minute, q); lb.ok || len(lb.rows) != 0 {
		t.Errorf("one tick: %+v", lb)
	}
}

// TestHTTPHistoryMemory measures the history of rows busy at every tick of the default 15 min
// retention (1 s ticks): 20 server rows (and their 20 client rows), each 5 requests a tick over
// 10 path templates and ~40 latency buckets. It logs the heap per row (38 KiB here) and checks
// it stays under the bound http_history.go states for a row changed at every tick (153 slots
// with a packed latency/path snapshot each).
func TestHTTPHistoryMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("memory measurement")
	}
	cfg := &Config{MaxTrackedPods: 64, Retention: 15 * time.Minute, Interval: time.Second}
	measure := func(ticks int) float64 {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		a := newHTTPAgg(cfg)
		t0 := time.Date(2026, 12, 4, 3, 0, 0, 0, time.UTC)
		now := t0
		a.now = func() time.Time { return now }
		clock := window.NewTieredClock(window.LayoutFor(cfg.Interval, cfg.Retention))
		for tick := 0; tick < ticks; tick++ {
			now = t0.Add(time.Duration(tick) * time.Second)
			for srv := 0; srv < 20; srv++ {
				server, client := httpServer, httpClient
				server.Name, client.Name = fmt.Sprintf("coreapi-%d", srv), fmt.Sprintf("crawler-%d", srv)
				for i := 0; i < 5; i++ {
					k := tick*5 + i
					x := hubblereplay.HTTPRequest{Node: "n", Time: now, Client: client, Server: server, Code: 200,
						Latency: time.Duration(500+(k*7919)%20000) * time.Microsecond, URL: fmt.Sprintf("http://coreapi/p%d/%d", k%10, k)}
					for _, f := range x.Flows() {
						a.observe(f)
					}
				}
			}
			clock.Tick(now)
			a.record(uint64(tick), clock.Layout())
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(a)
		return float64(after.HeapAlloc-before.HeapAlloc) / float64(len(a.keys))
	}
	perRow := measure(901)
	t.Logf("heap per HTTP row busy at every tick for 15 min: %.1f KiB", perRow/1024)
	if perRow > 153*(96+4200)+16<<10 {
		t.Errorf("%.0f B per row: over the stated bound", perRow)
	}
}
