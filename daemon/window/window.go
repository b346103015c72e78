// Package window keeps a fixed-length history of cumulative samples, one per collector tick,
// so rates over sliding windows (1 s, 10 s, 1 min, 5 min) are a subtraction of two samples.
package window

import (
	"time"
)

// Clock records when each tick happened. All series of one collector share a clock, so a
// window resolves to the same pair of ticks for every pod.
type Clock struct {
	times []time.Time
	ticks uint64 // ticks recorded so far; the latest is ticks-1
}

// NewClock keeps the last length ticks (at least 2, so one interval is always measurable).
func NewClock(length int) *Clock {
	if length < 2 {
		length = 2
	}
	return &Clock{times: make([]time.Time, length)}
}

// Len is the number of ticks kept.
func (c *Clock) Len() int { return len(c.times) }

// Tick records a new tick at t and returns its number (0, 1, 2, ...).
func (c *Clock) Tick(t time.Time) uint64 {
	n := c.ticks
	c.times[n%uint64(len(c.times))] = t
	c.ticks++
	return n
}

// Latest is the newest tick number and its time; ok is false before the first tick.
func (c *Clock) Latest() (uint64, time.Time, bool) {
	if c.ticks == 0 {
		return 0, time.Time{}, false
	}
	n := c.ticks - 1
	return n, c.times[n%uint64(len(c.times))], true
}

// Oldest is the oldest tick still kept.
func (c *Clock) Oldest() uint64 {
	if c.ticks <= uint64(len(c.times)) {
		return 0
	}
	return c.ticks - uint64(len(c.times))
}

// Time of a kept tick.
func (c *Clock) Time(tick uint64) time.Time { return c.times[tick%uint64(len(c.times))] }

// Span picks the tick to subtract for a window of length d ending at the latest tick: the newest
// kept tick at least d before it, or the oldest kept tick when history is shorter than d. It
// returns that tick, the latest tick and the real time between them. ok is false when fewer
// than two ticks exist.
func (c *Clock) Span(d time.Duration) (from, to uint64, elapsed time.Duration, ok bool) {
	if c.ticks < 2 {
		return 0, 0, 0, false
	}
	to = c.ticks - 1
	end := c.Time(to)
	oldest := c.Oldest()
	from = to - 1
	// Ticks jitter: a tick a hair less than d back still counts as d back, so allow half an
	// interval of slack.
	limit := end.Add(-d + end.Sub(c.Time(from))/2)
	for from > oldest && c.Time(from).After(limit) {
		from--
	}
	return from, to, end.Sub(c.Time(from)), true
}

// Series is the cumulative history of one subject (a pod's counters). Ticks before the series
// was born read as the zero value: counters start at zero when a subject first appears.
type Series[S any] struct {
	vals []S
	born uint64
	next uint64 // next tick to be written
}

// NewSeries makes a series of the clock's length whose first sample will be at tick born.
func NewSeries[S any](length int, born uint64) *Series[S] {
	return &Series[S]{vals: make([]S, length), born: born, next: born}
}

// Set records the cumulative value at tick. Ticks skipped since the last Set repeat the last
// value (nothing happened); ticks before the last one written are ignored.
func (s *Series[S]) Set(tick uint64, v S) {
	if tick < s.next {
		if tick+1 == s.next {
			s.vals[tick%uint64(len(s.vals))] = v
		}
		return
	}
	if s.next > s.born && tick > s.next {
		prev := s.vals[(s.next-1)%uint64(len(s.vals))]
		for t := s.next; t < tick && tick-t < uint64(len(s.vals)); t++ {
			s.vals[t%uint64(len(s.vals))] = prev
		}
	}
	s.vals[tick%uint64(len(s.vals))] = v
	s.next = tick + 1
}

// At is the value at tick: zero before birth, the oldest kept value for ticks that fell out of
// the ring, the last value for ticks after the last Set.
func (s *Series[S]) At(tick uint64) S {
	var zero S
	if tick < s.born || s.next == s.born {
		return zero
	}
	if tick >= s.next {
		tick = s.next - 1
	}
	if n := uint64(len(s.vals)); s.next > n && tick < s.next-n {
		tick = s.next - n
	}
	return s.vals[tick%uint64(len(s.vals))]
}
