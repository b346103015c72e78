// Package window keeps a fixed-length history of cumulative samples, one per collector tick,
// so rates over sliding windows (1 s, 10 s, 1 min, 5 min) and counts over a look-back window
// (the last 1, 5 or 15 minutes) are a subtraction of two samples.
//
// History is kept in two tiers (a Layout): every tick of the recent past (the fine ring, by
// default the last minute) and, before that, one sample every Step ticks (the coarse ring, by
// default every 10 s back to the retention). Samples are cumulative, so a window whose ends
// are kept ticks is exact; a window reaching into the coarse past starts at a coarse tick.
// Fifteen minutes at a 1 s interval cost 61+91 samples per subject instead of 901.
package window

import (
	"time"
)

// Layout says which ticks a Clock and its Series keep.
type Layout struct {
	// Fine is how many of the latest ticks are kept, every one (at least 2).
	Fine int
	// Step is the spacing of coarse samples in ticks (ticks divisible by Step are kept in the
	// coarse ring); 0 or 1 means there is no coarse ring.
	Step int
	// Coarse is how many coarse samples are kept.
	Coarse int
}

// FineSpan and CoarseStep are the tiers LayoutFor picks: every tick for the last minute, one
// sample per 10 s before that.
const (
	FineSpan   = time.Minute
	CoarseStep = 10 * time.Second
)

// LayoutFor is the two-tier layout for a collector ticking every interval and keeping
// retention of history: a single fine ring when retention is within FineSpan or the interval
// is CoarseStep or longer.
func LayoutFor(interval, retention time.Duration) Layout {
	if interval <= 0 {
		interval = time.Second
	}
	all := int(retention/interval) + 1
	step := int(CoarseStep / interval)
	fine := int(FineSpan/interval) + 1
	if step <= 1 || all <= fine {
		return Layout{Fine: max(all, 2)}
	}
	// One more coarse sample than the span needs, so a full-retention window always finds a
	// coarse tick at or before its start.
	coarse := int(retention/(time.Duration(step)*interval)) + 2
	return Layout{Fine: fine, Step: step, Coarse: coarse}
}

func (l Layout) normalized() Layout {
	if l.Fine < 2 {
		l.Fine = 2
	}
	if l.Step <= 1 || l.Coarse <= 0 {
		l.Step, l.Coarse = 0, 0
	}
	return l
}

// Samples is how many samples one series of this layout holds.
func (l Layout) Samples() int { l = l.normalized(); return l.Fine + l.Coarse }

// Clock records when each tick happened. All series of one collector share a clock, so a
// window resolves to the same pair of ticks for every pod.
type Clock struct {
	layout Layout
	times  []time.Time // fine ring
	coarse []time.Time // coarse ring: tick/Step mod Coarse
	ticks  uint64      // ticks recorded so far; the latest is ticks-1
}

// NewClock keeps the last length ticks, every one (at least 2, so one interval is always
// measurable).
func NewClock(length int) *Clock { return NewTieredClock(Layout{Fine: length}) }

// NewTieredClock keeps the ticks of layout l.
func NewTieredClock(l Layout) *Clock {
	l = l.normalized()
	return &Clock{layout: l, times: make([]time.Time, l.Fine), coarse: make([]time.Time, l.Coarse)}
}

// Layout is the clock's layout, for the series that follow it.
func (c *Clock) Layout() Layout { return c.layout }

// Len is the number of ticks kept at full resolution.
func (c *Clock) Len() int { return len(c.times) }

// Tick records a new tick at t and returns its number (0, 1, 2, ...).
func (c *Clock) Tick(t time.Time) uint64 {
	n := c.ticks
	c.times[n%uint64(len(c.times))] = t
	if s := uint64(c.layout.Step); s > 0 && n%s == 0 {
		c.coarse[(n/s)%uint64(len(c.coarse))] = t
	}
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

// fineStart is the oldest tick of the fine ring.
func (c *Clock) fineStart() uint64 {
	if c.ticks <= uint64(len(c.times)) {
		return 0
	}
	return c.ticks - uint64(len(c.times))
}

// Oldest is the oldest tick still kept.
func (c *Clock) Oldest() uint64 {
	fs := c.fineStart()
	s := uint64(c.layout.Step)
	if s == 0 || fs == 0 {
		return fs
	}
	last := (c.ticks - 1) / s * s
	if span := uint64(len(c.coarse)-1) * s; last > span {
		return min(fs, last-span)
	}
	return 0
}

// Kept says whether tick's time and samples are kept.
func (c *Clock) Kept(tick uint64) bool {
	if tick >= c.ticks || tick < c.Oldest() {
		return false
	}
	return tick >= c.fineStart() || tick%uint64(c.layout.Step) == 0
}

// Time of a kept tick (a tick in the coarse past rounds down to its coarse sample).
func (c *Clock) Time(tick uint64) time.Time {
	if tick >= c.fineStart() || c.layout.Step == 0 {
		return c.times[tick%uint64(len(c.times))]
	}
	s := uint64(c.layout.Step)
	return c.coarse[(tick/s)%uint64(len(c.coarse))]
}

// Prev is the kept tick before tick (tick itself when it is the oldest).
func (c *Clock) Prev(tick uint64) uint64 {
	if tick <= c.Oldest() {
		return tick
	}
	p := tick - 1
	if p >= c.fineStart() || c.layout.Step == 0 {
		return p
	}
	return p / uint64(c.layout.Step) * uint64(c.layout.Step)
}

// Next is the kept tick after tick (tick itself when it is the latest).
func (c *Clock) Next(tick uint64) uint64 {
	if tick+1 >= c.ticks {
		return tick
	}
	fs := c.fineStart()
	if tick+1 >= fs || c.layout.Step == 0 {
		return tick + 1
	}
	s := uint64(c.layout.Step)
	return min(tick/s*s+s, fs)
}

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
	from = to - 1
	// Ticks jitter: a tick a hair less than d back still counts as d back, so allow half an
	// interval of slack.
	limit := end.Add(-d + end.Sub(c.Time(from))/2)
	for {
		p := c.Prev(from)
		if p == from || !c.Time(from).After(limit) {
			break
		}
		from = p
	}
	return from, to, end.Sub(c.Time(from)), true
}

// Series is the cumulative history of one subject (a pod's counters). Ticks before the series
// was born read as the zero value: counters start at zero when a subject first appears.
type Series[S any] struct {
	vals   []S // fine ring
	coarse []S // coarse ring, every step-th tick
	step   uint64
	born   uint64
	next   uint64 // next tick to be written
}

// NewSeries makes a single-ring series of length ticks whose first sample will be at tick born.
func NewSeries[S any](length int, born uint64) *Series[S] {
	return NewSeriesLayout[S](Layout{Fine: length}, born)
}

// NewSeriesLayout makes a series keeping the ticks of layout l (a Clock's Layout) whose first
// sample will be at tick born.
func NewSeriesLayout[S any](l Layout, born uint64) *Series[S] {
	l = l.normalized()
	return &Series[S]{vals: make([]S, l.Fine), coarse: make([]S, l.Coarse), step: uint64(l.Step), born: born, next: born}
}

func (s *Series[S]) putCoarse(tick uint64, v S) {
	if s.step > 0 && tick%s.step == 0 {
		s.coarse[(tick/s.step)%uint64(len(s.coarse))] = v
	}
}

// Set records the cumulative value at tick. Ticks skipped since the last Set repeat the last
// value (nothing happened); ticks before the last one written are ignored.
func (s *Series[S]) Set(tick uint64, v S) {
	if tick < s.next {
		if tick+1 == s.next {
			s.vals[tick%uint64(len(s.vals))] = v
			s.putCoarse(tick, v)
		}
		return
	}
	if s.next > s.born && tick > s.next {
		prev := s.vals[(s.next-1)%uint64(len(s.vals))]
		// Only the skipped ticks the fine ring still keeps after tick (a gap longer than the
		// ring fills all of it but tick's slot).
		start := s.next
		if n := uint64(len(s.vals)); tick-start >= n {
			start = tick - n + 1
		}
		for t := start; t < tick; t++ {
			s.vals[t%uint64(len(s.vals))] = prev
		}
		if s.step > 0 {
			span := s.step * uint64(len(s.coarse))
			for t := (s.next + s.step - 1) / s.step * s.step; t < tick; t += s.step {
				if tick-t < span {
					s.putCoarse(t, prev)
				}
			}
		}
	}
	s.vals[tick%uint64(len(s.vals))] = v
	s.putCoarse(tick, v)
	s.next = tick + 1
}

// At is the value at tick: zero before birth, the oldest kept value for ticks that fell out of
// the rings, the last value for ticks after the last Set. A tick in the coarse past reads the
// coarse sample at or before it.
func (s *Series[S]) At(tick uint64) S {
	var zero S
	if tick < s.born || s.next == s.born {
		return zero
	}
	if tick >= s.next {
		tick = s.next - 1
	}
	n := uint64(len(s.vals))
	if s.next <= n || tick >= s.next-n {
		return s.vals[tick%n]
	}
	if s.step == 0 {
		return s.vals[(s.next-n)%n]
	}
	c := tick / s.step * s.step
	last := (s.next - 1) / s.step * s.step
	if span := uint64(len(s.coarse)-1) * s.step; last > span && c < last-span {
		c = last - span
	}
	if c < s.born {
		return zero
	}
	return s.coarse[(c/s.step)%uint64(len(s.coarse))]
}

// Activity walks the kept ticks of clock c from from to to and reports the start of the first
// and the end of the last step between two kept ticks across which changed says the series
// changed: when something started and stopped happening within the window, to the resolution
// of the samples. ok is false when nothing changed.
func (s *Series[S]) Activity(c *Clock, from, to uint64, changed func(prev, cur *S) bool) (first, last time.Time, ok bool) {
	prev := s.At(from)
	for t := from; t < to; {
		n := c.Next(t)
		if n == t {
			break
		}
		cur := s.At(n)
		if changed(&prev, &cur) {
			if !ok {
				first, ok = c.Time(t), true
			}
			last = c.Time(n)
		}
		prev, t = cur, n
	}
	return first, last, ok
}
