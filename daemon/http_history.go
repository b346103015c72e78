package daemon

import (
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/isoobs/isoobs/daemon/window"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// top http --since: every row keeps a history of its cumulative counts on the collector's
// clock (the DNS history's layout and retention: every tick for the last minute, one sample per
// 10 s before, back to --retention), so a look-back is a subtraction of two kept samples, as for
// DNS, exact over the kept ticks it spans.
//
// One slot of a row's history is an httpSample: 10 counters (80 B) and a pointer (8 B) — 88 B,
// 61 + 92 = 153 slots at the defaults, 13.2 KiB per row. The pointer leads to the row's
// cumulative latency histogram and path counts (httpCum), made only at the ticks the row
// changed in and shared by every slot after them until it changes again: 48 B plus 10 B per
// latency bucket the row has used (at most 272) and 24 B per path template (at most 32 and
// "other"), so a row busy at every tick of the retention holds at most 153 of them (3.6 KiB
// each at worst, a few hundred bytes for a service with tens of latency buckets and paths:
// TestHTTPHistoryMemory measures 126 KiB for a row busy at every tick with 10 paths and ~40
// latency buckets).
// Rows are at most 4 per tracked pod (--max-tracked-pods), and a row idle for the retention is
// forgotten with its history.

// httpSample is one history slot of a row: its cumulative counts at a tick.
type httpSample struct {
	n   [httpSampleFields]uint64
	cum *httpCum
}

const (
	hsRequests = iota
	hsResponses
	hsDenied
	hsNoLatency
	hsStatus         // status[0..5]: other, 1xx..5xx
	httpSampleFields = hsStatus + 6
)

// httpCum is a row's cumulative latency histogram and path counts at a tick; never modified
// once made (slots share it).
type httpCum struct {
	buckets []uint16 // sorted
	counts  []uint64
	paths   []httpPathCount // paths[i] counts the row's pathOrder[i]
	other   httpPathCount
}

// sample is the row's history slot now. Callers hold httpAgg.mu.
func (st *httpStats) sample() httpSample {
	var s httpSample
	s.n[hsRequests], s.n[hsResponses], s.n[hsDenied], s.n[hsNoLatency] = st.requests, st.responses, st.denied, st.noLatency
	copy(s.n[hsStatus:], st.status[:])
	c := &httpCum{buckets: make([]uint16, 0, len(st.latency)), counts: make([]uint64, 0, len(st.latency)),
		paths: make([]httpPathCount, len(st.pathOrder)), other: st.other}
	for b := range st.latency {
		c.buckets = append(c.buckets, b)
	}
	slices.Sort(c.buckets)
	for _, b := range c.buckets {
		c.counts = append(c.counts, st.latency[b])
	}
	for i, pk := range st.pathOrder {
		c.paths[i] = *st.paths[pk]
	}
	s.cum = c
	return s
}

// statsAt is the row as it was at a slot: its counts then, its identity now (for httpRow).
func (st *httpStats) statsAt(s *httpSample) *httpStats {
	h := &httpStats{gen: st.gen, workload: st.workload, workloadKind: st.workloadKind, node: st.node, service: st.service,
		labels: st.labels, identity: st.identity, requests: s.n[hsRequests], responses: s.n[hsResponses], denied: s.n[hsDenied],
		noLatency: s.n[hsNoLatency], latency: map[uint16]uint64{}, paths: map[httpPathKey]*httpPathCount{}}
	copy(h.status[:], s.n[hsStatus:])
	if c := s.cum; c != nil {
		for i, b := range c.buckets {
			h.latency[b] = c.counts[i]
		}
		for i := range c.paths {
			h.paths[st.pathOrder[i]] = &c.paths[i]
		}
		h.other = c.other
	}
	return h
}

// record adds tick to the history of every row that changed since the last tick (a row's
// series repeats its last sample over the ticks it did not change in), and forgets idle rows.
// The collector calls it every tick with its clock's layout, under its own lock.
func (a *httpAgg) record(tick uint64, l window.Layout) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, st := range a.keys {
		if st.hist == nil {
			// Born now: the row's counts so far arrived after the previous tick.
			st.hist = window.NewSeriesLayout[httpSample](l, tick)
		}
		if !st.changed {
			continue
		}
		st.changed = false
		st.hist.Set(tick, st.sample())
	}
	a.gcLocked(a.now())
}

// httpLookBack is what a look-back frame counts: rows over the kept ticks [from, to] of the
// collector's clock.
type httpLookBack struct {
	rows      []*isoobsv1.HTTPRow
	from, to  time.Time
	elapsed   time.Duration
	ok        bool // two ticks at least
	untracked uint64
}

// lookBack counts the rows q selects over the last d of history on clock c (the collector's;
// callers hold the collector's lock so it does not tick meanwhile): each row is its sample at
// the latest tick minus its sample at the kept tick d before (zero before the row was born),
// rates are those counts over the time between the two, and first/last seen are the ticks
// between which its requests or responses changed.
func (a *httpAgg) lookBack(c *window.Clock, d time.Duration, q *httpQuery) httpLookBack {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out httpLookBack
	out.untracked = a.untracked
	from, to, elapsed, ok := c.Span(d)
	if !ok {
		return out
	}
	out.ok, out.from, out.to, out.elapsed = true, c.Time(from), c.Time(to), elapsed
	changed := func(p, n *httpSample) bool {
		return p.n[hsRequests] != n.n[hsRequests] || p.n[hsResponses] != n.n[hsResponses]
	}
	for k, st := range a.keys {
		if st.hist == nil || !q.matches(k, st) {
			continue
		}
		end, start := st.hist.At(to), st.hist.At(from)
		if end.n[hsRequests] == start.n[hsRequests] && end.n[hsResponses] == start.n[hsResponses] {
			continue // nothing in the window
		}
		base := st.statsAt(&start)
		r := httpRow(k, st.statsAt(&end), base, base, elapsed.Seconds())
		if first, last, seen := st.hist.Activity(c, from, to, changed); seen {
			r.FirstSeen, r.LastSeen = timestamppb.New(first), timestamppb.New(last)
		}
		out.rows = append(out.rows, r)
	}
	slices.SortFunc(out.rows, func(x, y *isoobsv1.HTTPRow) int {
		if c := strings.Compare(x.Namespace+"/"+x.Pod, y.Namespace+"/"+y.Pod); c != 0 {
			return c
		}
		return strings.Compare(x.Direction, y.Direction)
	})
	return out
}
