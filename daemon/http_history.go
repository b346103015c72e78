package daemon

import (
	"encoding/binary"
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
// One slot of a row's history is an httpSample: 10 counters (80 B) and a string header (16 B)
// — 96 B, 61 + 92 = 153 slots at the defaults, 14.3 KiB per row. The string is the row's
// cumulative latency histogram and path counts, varint-packed (httpCum), made only at the
// ticks the row changed in and shared by every slot after them until it changes again: per
// latency bucket the row has used (at most 272) 1 B of gap plus its count's varint (3 B up to
// 2 M), per path template (at most 32 and "other") its three counts' varints — a few hundred
// bytes for a service with tens of latency buckets and paths, about 4 KiB at the very worst. So
// a row busy at every tick of the retention holds at most 153 of them: TestHTTPHistoryMemory
// measures 38 KiB for a row busy at every tick with 10 paths and ~40 latency buckets. Rows are at most 4 per tracked
// pod (--max-tracked-pods), and a row idle for the retention is forgotten with its history.

// httpSample is one history slot of a row: its cumulative counts at a tick.
type httpSample struct {
	n [httpSampleFields]uint64
	// cum is the latency histogram and path counts (appendHTTPCum); immutable, so slots share it.
	cum string
}

const (
	hsRequests = iota
	hsResponses
	hsDenied
	hsNoLatency
	hsStatus         // status[0..5]: other, 1xx..5xx
	httpSampleFields = hsStatus + 6
)

// appendHTTPCum packs a row's cumulative latency histogram and path counts: the number of
// buckets, then per bucket (ascending) the gap from the previous one and its count; the number
// of paths, then per path (in pathOrder) its requests, 4xx and 5xx; then "other"'s three.
// Everything is a uvarint. Callers hold httpAgg.mu.
func (st *httpStats) appendHTTPCum(b []byte) []byte {
	buckets := make([]uint16, 0, len(st.latency))
	for k := range st.latency {
		buckets = append(buckets, k)
	}
	slices.Sort(buckets)
	b = binary.AppendUvarint(b, uint64(len(buckets)))
	prev := uint16(0)
	for _, k := range buckets {
		b = binary.AppendUvarint(b, uint64(k-prev))
		b = binary.AppendUvarint(b, st.latency[k])
		prev = k
	}
	b = binary.AppendUvarint(b, uint64(len(st.pathOrder)))
	three := func(b []byte, p *httpPathCount) []byte {
		b = binary.AppendUvarint(b, p.requests)
		b = binary.AppendUvarint(b, p.s4xx)
		return binary.AppendUvarint(b, p.s5xx)
	}
	for _, pk := range st.pathOrder {
		b = three(b, st.paths[pk])
	}
	return three(b, &st.other)
}

// sample is the row's history slot now; buf is scratch space. Callers hold httpAgg.mu.
func (st *httpStats) sample(buf []byte) (httpSample, []byte) {
	var s httpSample
	s.n[hsRequests], s.n[hsResponses], s.n[hsDenied], s.n[hsNoLatency] = st.requests, st.responses, st.denied, st.noLatency
	copy(s.n[hsStatus:], st.status[:])
	buf = st.appendHTTPCum(buf[:0])
	s.cum = string(buf)
	return s, buf
}

// statsAt is the row as it was at a slot: its counts then, its identity now (for httpRow).
func (st *httpStats) statsAt(s *httpSample) *httpStats {
	h := &httpStats{gen: st.gen, workload: st.workload, workloadKind: st.workloadKind, node: st.node, service: st.service,
		labels: st.labels, identity: st.identity, requests: s.n[hsRequests], responses: s.n[hsResponses], denied: s.n[hsDenied],
		noLatency: s.n[hsNoLatency], latency: map[uint16]uint64{}, paths: map[httpPathKey]*httpPathCount{}}
	copy(h.status[:], s.n[hsStatus:])
	if s.cum == "" {
		return h
	}
	b := []byte(s.cum)
	next := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			b = nil
			return 0
		}
		b = b[n:]
		return v
	}
	bucket := uint64(0)
	for range next() {
		bucket += next()
		h.latency[uint16(bucket)] = next()
	}
	three := func() httpPathCount { return httpPathCount{requests: next(), s4xx: next(), s5xx: next()} }
	for i := range min(int(next()), len(st.pathOrder)) {
		p := three()
		h.paths[st.pathOrder[i]] = &p
	}
	h.other = three()
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
		var smp httpSample
		smp, a.scratch = st.sample(a.scratch)
		st.hist.Set(tick, smp)
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
