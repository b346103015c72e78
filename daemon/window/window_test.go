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
