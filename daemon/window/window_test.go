package window

import (
	"testing"
	"time"
)

func TestSpanPicksWindow(t *testing.T) {
	c := NewClock(301)
	t0 := time.Unix(1000, 0)
	if _, _, _, ok := c.Span(time.Second); ok {
		t.Fatal("span with no ticks")
	}
	// Ticks every second with a few ms of jitter.
	for i := range 400 {
		jitter := time.Duration(i%7) * 3 * time.Millisecond
		c.Tick(t0.Add(time.Duration(i)*time.Second + jitter))
	}
	latest, _, _ := c.Latest()
	if latest != 399 {
		t.Fatalf("latest %d", latest)
	}
	for _, tc := range []struct {
		d     time.Duration
		ticks uint64
	}{{time.Second, 1}, {10 * time.Second, 10}, {time.Minute, 60}, {5 * time.Minute, 300}, {time.Hour, 300}} {
		from, to, el, ok := c.Span(tc.d)
		if !ok || to != 399 || to-from != tc.ticks {
			t.Errorf("Span(%v) = %d..%d ok=%v, want %d ticks", tc.d, from, to, ok, tc.ticks)
		}
		if want := time.Duration(tc.ticks) * time.Second; el < want-50*time.Millisecond || el > want+50*time.Millisecond {
			t.Errorf("Span(%v) elapsed %v, want ~%v", tc.d, el, want)
		}
	}
}

func TestSpanShortHistory(t *testing.T) {
	c := NewClock(10)
	t0 := time.Unix(0, 0)
	for i := range 3 {
		c.Tick(t0.Add(time.Duration(i) * time.Second))
	}
	from, to, el, ok := c.Span(time.Minute)
	if !ok || from != 0 || to != 2 || el != 2*time.Second {
		t.Fatalf("Span = %d %d %v %v", from, to, el, ok)
	}
}

func TestSeriesRates(t *testing.T) {
	const length = 61
	c := NewClock(length)
	t0 := time.Unix(0, 0)
	var s *Series[[2]uint64]
	var cum [2]uint64
	for i := range 200 {
		tick := c.Tick(t0.Add(time.Duration(i) * time.Second))
		if i == 5 {
			s = NewSeries[[2]uint64](length, tick)
		}
		if s == nil {
			continue
		}
		// 10 queries/s, 1 error/s; nothing recorded at ticks 50..54 (pod idle, skipped).
		cum[0] += 10
		cum[1]++
		if i >= 50 && i < 55 {
			cum[0] -= 10
			cum[1]--
			continue
		}
		s.Set(tick, cum)
	}
	// Over the last 10 s: 100 queries.
	from, to, el, _ := c.Span(10 * time.Second)
	if d := s.At(to)[0] - s.At(from)[0]; d != 100 || el != 10*time.Second {
		t.Errorf("10s delta %d over %v, want 100 over 10s", d, el)
	}
	// The minute window is limited to the 60 intervals the ring keeps.
	from, to, _, _ = c.Span(time.Minute)
	if d := s.At(to)[1] - s.At(from)[1]; d != 60 {
		t.Errorf("1m delta %d, want 60", d)
	}
	// Before birth reads zero; skipped ticks repeat the last value.
	s2 := NewSeries[[2]uint64](length, 10)
	if s2.At(12) != ([2]uint64{}) {
		t.Error("unborn series not zero")
	}
	s2.Set(10, [2]uint64{1, 1})
	s2.Set(14, [2]uint64{5, 5})
	if s2.At(9) != ([2]uint64{}) || s2.At(12) != ([2]uint64{1, 1}) || s2.At(14) != ([2]uint64{5, 5}) || s2.At(20) != ([2]uint64{5, 5}) {
		t.Errorf("At: %v %v %v %v", s2.At(9), s2.At(12), s2.At(14), s2.At(20))
	}
	// Ticks that fell out of the ring read as the oldest kept value.
	s3 := NewSeries[uint64](4, 0)
	for i := range uint64(10) {
		s3.Set(i, i*10)
	}
	if s3.At(1) != 60 || s3.At(9) != 90 {
		t.Errorf("s3 At(1)=%d At(9)=%d, want 60 90", s3.At(1), s3.At(9))
	}
}

func TestLayoutFor(t *testing.T) {
	for _, tc := range []struct {
		interval, retention time.Duration
		want                Layout
	}{
		{time.Second, 15 * time.Minute, Layout{Fine: 61, Step: 10, Coarse: 92}},
		{time.Second, 5 * time.Minute, Layout{Fine: 61, Step: 10, Coarse: 32}},
		{time.Second, time.Minute, Layout{Fine: 61}},
		{250 * time.Millisecond, 15 * time.Minute, Layout{Fine: 241, Step: 40, Coarse: 92}},
		{10 * time.Second, 15 * time.Minute, Layout{Fine: 91}},
	} {
		if got := LayoutFor(tc.interval, tc.retention); got != tc.want {
			t.Errorf("LayoutFor(%v, %v) = %+v, want %+v", tc.interval, tc.retention, got, tc.want)
		}
	}
	if n := LayoutFor(time.Second, 15*time.Minute).Samples(); n != 153 {
		t.Errorf("15 min at 1 s keeps %d samples per series, want 153 (not 901)", n)
	}
}

// TestTieredMatchesFullHistory: every window a tiered clock picks ends on kept ticks whose
// series values are exactly the cumulative values at those ticks, so counts over any window
// (1 s to the whole retention) are exact; and the window is as long as asked, within one
// coarse step, once history is long enough.
func TestTieredMatchesFullHistory(t *testing.T) {
	l := LayoutFor(time.Second, 15*time.Minute)
	c := NewTieredClock(l)
	t0 := time.Unix(5000, 0)
	const born = 7
	s := NewSeriesLayout[uint64](l, born)
	truth := map[uint64]uint64{}
	var cum uint64
	for i := range 2000 {
		tick := c.Tick(t0.Add(time.Duration(i)*time.Second + time.Duration(i%5)*time.Millisecond))
		if i >= born {
			cum += uint64(i*7%13 + 1)
			if i%97 != 0 { // some ticks skipped: they repeat the last value
				s.Set(tick, cum)
			}
		}
		truth[tick] = cum
		if i < born {
			truth[tick] = 0
		}
		if i%97 == 0 && i >= born {
			truth[tick] = truth[tick-1]
			cum = truth[tick]
		}
		if i < 3 || i%37 != 0 {
			continue
		}
		for _, d := range []time.Duration{time.Second, 10 * time.Second, time.Minute, 90 * time.Second, 5 * time.Minute, 15 * time.Minute} {
			from, to, el, ok := c.Span(d)
			if !ok || to != tick {
				t.Fatalf("tick %d: Span(%v) = %d..%d ok=%v", tick, d, from, to, ok)
			}
			if !c.Kept(from) {
				t.Fatalf("tick %d: Span(%v) from %d not kept", tick, d, from)
			}
			if got, want := s.At(to)-s.At(from), truth[to]-truth[from]; got != want {
				t.Fatalf("tick %d: window %v (%d..%d): count %d, want %d", tick, d, from, to, got, want)
			}
			history := time.Duration(tick) * time.Second
			if want := min(d, history); el < want-50*time.Millisecond || el > want+CoarseStep {
				t.Errorf("tick %d: Span(%v) covers %v, want %v (+ at most a coarse step)", tick, d, el, want)
			}
		}
	}
}

func TestActivityFirstLastSeen(t *testing.T) {
	l := LayoutFor(time.Second, 15*time.Minute)
	c := NewTieredClock(l)
	t0 := time.Unix(0, 0)
	s := NewSeriesLayout[uint64](l, 0)
	var cum uint64
	for i := range 600 {
		tick := c.Tick(t0.Add(time.Duration(i) * time.Second))
		// A flood between seconds 200 and 300 (counted at ticks 201..300), and one burst in
		// the last minute, at tick 580.
		if i > 200 && i <= 300 || i == 580 {
			cum += 10
		}
		s.Set(tick, cum)
	}
	changed := func(a, b *uint64) bool { return *b != *a }
	from, to, _, _ := c.Span(15 * time.Minute)
	first, last, ok := s.Activity(c, from, to, changed)
	if !ok || first != t0.Add(200*time.Second) || last != t0.Add(580*time.Second) {
		t.Errorf("whole history: first %v last %v ok %v, want 200s and 580s", first.Unix(), last.Unix(), ok)
	}
	// The flood is in the coarse past: seen to 10 s resolution.
	from, _, _, _ = c.Span(9 * time.Minute) // 540 s back: tick 59
	first, last, ok = s.Activity(c, from, 500, changed)
	if !ok || first != t0.Add(200*time.Second) || last != t0.Add(300*time.Second) {
		t.Errorf("flood: first %v last %v ok %v, want 200s and 300s", first.Unix(), last.Unix(), ok)
	}
	from, to, _, _ = c.Span(time.Minute)
	first, last, ok = s.Activity(c, from, to, changed)
	if !ok || first != t0.Add(579*time.Second) || last != t0.Add(580*time.Second) {
		t.Errorf("last minute: first %v last %v ok %v, want 579s and 580s", first.Unix(), last.Unix(), ok)
	}
	from, to, _, _ = c.Span(10 * time.Second)
	if _, _, ok := s.Activity(c, from, to, changed); ok {
		t.Error("activity in a quiet window")
	}
}

// TestSparseSetsLongGaps: a series Set only at the ticks it changed in (top http's rows), with
// gaps longer than the fine ring, reads like one Set at every tick: the fine ring's skipped
// slots repeat the last value even when the gap began before the ring's span.
func TestSparseSetsLongGaps(t *testing.T) {
	l := LayoutFor(time.Second, 15*time.Minute)
	c := NewTieredClock(l)
	sparse, dense := NewSeriesLayout[uint64](l, 3), NewSeriesLayout[uint64](l, 3)
	changes := map[uint64]uint64{3: 5, 10: 300, 250: 60, 401: 200, 402: 1, 700: 9}
	var cum uint64
	for tick := uint64(0); tick <= 760; tick++ {
		c.Tick(time.Unix(int64(tick), 0))
		if n, ok := changes[tick]; ok {
			cum += n
			sparse.Set(tick, cum)
		}
		if tick >= 3 {
			dense.Set(tick, cum)
		}
		for back := uint64(0); back <= tick; back++ {
			if x := tick - back; c.Kept(x) && sparse.At(x) != dense.At(x) {
				t.Fatalf("at tick %d, tick %d reads %d, want %d", tick, x, sparse.At(x), dense.At(x))
			}
		}
	}
}
