// Package topk keeps the heaviest query names of a stream in bounded memory with the
// Space-Saving algorithm (Metwally, Agrawal, El Abbadi 2005), weighted form.
package topk

import (
	"container/heap"
	"sort"
)

// Item is one monitored name.
type Item struct {
	Name string
	// Count over-estimates the true count by at most Error: true count is in [Count-Error, Count].
	Count uint64
	Error uint64
	// NXDomain counts NXDOMAIN answers seen since the name entered the summary (a lower bound;
	// exact when Error is 0).
	NXDomain uint64
}

// SpaceSaving monitors at most Capacity names. While fewer distinct names than Capacity have
// been seen every count is exact (Error 0). After that a new name takes the place of the
// least-counted one and inherits its count as Error, which bounds every over-estimate by the
// smallest monitored count (<= total/Capacity).
type SpaceSaving struct {
	capacity int
	items    minHeap
	index    map[string]*entry // name -> its entry (which knows its heap position)
	total    uint64
	// evictions counts names displaced; 0 means every count is exact.
	evictions uint64
}

// New returns a summary that monitors at most capacity names (at least 1).
func New(capacity int) *SpaceSaving {
	if capacity < 1 {
		capacity = 1
	}
	return &SpaceSaving{capacity: capacity, index: make(map[string]*entry)}
}

// Add counts weight occurrences of name, nxdomain of which were NXDOMAIN answers.
func (s *SpaceSaving) Add(name string, weight, nxdomain uint64) {
	if weight == 0 && nxdomain == 0 {
		return
	}
	s.total += weight
	if e, ok := s.index[name]; ok {
		e.Count += weight
		e.NXDomain += nxdomain
		heap.Fix(&s.items, e.pos)
		return
	}
	if len(s.items) < s.capacity {
		e := &entry{Item: Item{Name: name, Count: weight, NXDomain: nxdomain}}
		s.index[name] = e
		heap.Push(&s.items, e)
		return
	}
	// Replace the minimum: the newcomer may have been among the displaced before, so it gets
	// the minimum as its possible over-count.
	min := s.items[0]
	delete(s.index, min.Name)
	s.evictions++
	min.Error = min.Count
	min.Count += weight
	min.Name = name
	min.NXDomain = nxdomain
	s.index[name] = min
	heap.Fix(&s.items, 0)
}

// Top returns up to n items with the highest counts, highest first (all when n <= 0).
func (s *SpaceSaving) Top(n int) []Item {
	out := make([]Item, len(s.items))
	for i := range s.items {
		out[i] = s.items[i].Item
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Name < out[j].Name
	})
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

// Each calls fn for every monitored item, in no particular order, without allocating.
func (s *SpaceSaving) Each(fn func(*Item)) {
	for i := range s.items {
		fn(&s.items[i].Item)
	}
}

// Total is the sum of all weights added (exact).
func (s *SpaceSaving) Total() uint64 { return s.total }

// Evictions counts names displaced so far; 0 means every count is exact.
func (s *SpaceSaving) Evictions() uint64 { return s.evictions }

// Len is the number of monitored names.
func (s *SpaceSaving) Len() int { return len(s.items) }

// Capacity is the maximum number of monitored names.
func (s *SpaceSaving) Capacity() int { return s.capacity }

// Reset forgets everything.
func (s *SpaceSaving) Reset() {
	s.items = s.items[:0]
	clear(s.index)
	s.total, s.evictions = 0, 0
}

// entry is a monitored item and its position in the heap. Keeping the position here (not
// in the name index) makes a heap swap two integer stores instead of two string-keyed map
// writes, which were most of the cost of a flood of unique names.
type entry struct {
	Item
	pos int
}

// minHeap orders by count, smallest on top, and keeps each entry's position in step.
type minHeap []*entry

func (h minHeap) Len() int           { return len(h) }
func (h minHeap) Less(i, j int) bool { return h[i].Count < h[j].Count }
func (h minHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].pos = i
	h[j].pos = j
}
func (h *minHeap) Push(x any) {
	e := x.(*entry)
	e.pos = len(*h)
	*h = append(*h, e)
}
func (h *minHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
