// Package topk keeps the heaviest query names of a stream in bounded memory with the
// Space-Saving algorithm (Metwally, Agrawal, El Abbadi 2005), weighted form.
package topk

import (
	"hash/maphash"
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
//
// Entries live in the paper's "stream summary": buckets of equal count in a list ordered by
// count, smallest first. Adding weight 1 (most names of a flood of unique names) moves an entry
// to the next bucket in O(1), and the entry to evict is the head of the first bucket, where a
// heap needed a sift of O(log Capacity) swaps per name.
type SpaceSaving struct {
	capacity int
	len      int
	min      *bucket // smallest count; nil when empty
	free     *bucket // emptied buckets kept for reuse, linked by next
	// slots is an open-addressing hash table (linear probing) of the entries by name hash. It
	// replaces a map[string]*entry so a name fed to several summaries is hashed once (AddHashed)
	// and an eviction costs no rehash of either name.
	slots []*entry
	total uint64
	// evictions counts names displaced; 0 means every count is exact.
	evictions uint64
}

// entry is a monitored item, linked with the other entries of its bucket.
type entry struct {
	Item
	hash       uint64
	bucket     *bucket
	prev, next *entry
}

// bucket holds every entry whose count is count.
type bucket struct {
	count      uint64
	head       *entry
	prev, next *bucket
}

// New returns a summary that monitors at most capacity names (at least 1).
func New(capacity int) *SpaceSaving {
	if capacity < 1 {
		capacity = 1
	}
	return &SpaceSaving{capacity: capacity}
}

var seed = maphash.MakeSeed()

// Hash is the hash AddHashed expects for name.
func Hash(name string) uint64 { return maphash.String(seed, name) }

// Add counts weight occurrences of name, nxdomain of which were NXDOMAIN answers.
func (s *SpaceSaving) Add(name string, weight, nxdomain uint64) {
	s.AddHashed(name, Hash(name), weight, nxdomain)
}

// AddHashed is Add for a name whose Hash is already known.
func (s *SpaceSaving) AddHashed(name string, hash, weight, nxdomain uint64) {
	if weight == 0 && nxdomain == 0 {
		return
	}
	s.total += weight
	slot, found := s.find(name, hash)
	if found {
		e := s.slots[slot]
		e.NXDomain += nxdomain
		s.raise(e, weight)
		return
	}
	if s.len < s.capacity {
		e := &entry{Item: Item{Name: name, NXDomain: nxdomain}, hash: hash}
		s.len++
		if s.len*2 > len(s.slots) {
			s.grow()
			slot, _ = s.find(name, hash)
		}
		s.slots[slot] = e
		s.insertZero(e)
		s.raise(e, weight)
		return
	}
	// Replace an entry of the minimum count: the newcomer may have been among the displaced
	// before, so it gets the minimum as its possible over-count.
	e := s.min.head
	old, _ := s.find(e.Name, e.hash)
	s.remove(old)
	slot, _ = s.find(name, hash) // removal may have shifted the free slot
	s.evictions++
	e.Error = e.Count
	e.Name, e.hash = name, hash
	e.NXDomain = nxdomain
	s.slots[slot] = e
	s.raise(e, weight)
}

// find returns the slot holding name, or the free slot where it would go.
func (s *SpaceSaving) find(name string, hash uint64) (int, bool) {
	if len(s.slots) == 0 {
		s.slots = make([]*entry, 8)
	}
	mask := uint64(len(s.slots) - 1)
	for i := hash & mask; ; i = (i + 1) & mask {
		e := s.slots[i]
		if e == nil {
			return int(i), false
		}
		if e.hash == hash && e.Name == name {
			return int(i), true
		}
	}
}

// remove empties slot i and shifts later entries of its probe run back, so every entry stays
// reachable from its home slot without tombstones.
func (s *SpaceSaving) remove(i int) {
	mask := len(s.slots) - 1
	for j := (i + 1) & mask; s.slots[j] != nil; j = (j + 1) & mask {
		home := int(s.slots[j].hash) & mask
		// The entry at j may fill the hole at i unless its home lies cyclically in (i, j].
		if i <= j && i < home && home <= j || i > j && (i < home || home <= j) {
			continue
		}
		s.slots[i] = s.slots[j]
		i = j
	}
	s.slots[i] = nil
}

// grow doubles the table (kept at most half full).
func (s *SpaceSaving) grow() {
	old := s.slots
	s.slots = make([]*entry, max(8, 2*len(old)))
	mask := uint64(len(s.slots) - 1)
	for _, e := range old {
		if e == nil {
			continue
		}
		i := e.hash & mask
		for s.slots[i] != nil {
			i = (i + 1) & mask
		}
		s.slots[i] = e
	}
}

// insertZero links a new entry with count 0 into a bucket of count 0 at the front of the list;
// raise moves it to its real count right after.
func (s *SpaceSaving) insertZero(e *entry) {
	b := s.min
	if b == nil || b.count != 0 {
		b = s.newBucket(0)
		b.next = s.min
		if s.min != nil {
			s.min.prev = b
		}
		s.min = b
	}
	s.link(b, e)
}

// raise adds weight to e's count and moves it to the bucket of its new count.
func (s *SpaceSaving) raise(e *entry, weight uint64) {
	if weight == 0 {
		return
	}
	from := e.bucket
	count := e.Count + weight
	// The last bucket with a count <= the new count: for weight 1 it is from or from.next.
	at := from
	for at.next != nil && at.next.count <= count {
		at = at.next
	}
	to := at
	if at.count != count {
		to = s.newBucket(count)
		to.prev, to.next = at, at.next
		if at.next != nil {
			at.next.prev = to
		}
		at.next = to
	}
	s.unlink(e)
	e.Count = count
	s.link(to, e)
}

func (s *SpaceSaving) link(b *bucket, e *entry) {
	e.bucket = b
	e.prev = nil
	e.next = b.head
	if b.head != nil {
		b.head.prev = e
	}
	b.head = e
}

// unlink takes e out of its bucket and drops the bucket if it became empty.
func (s *SpaceSaving) unlink(e *entry) {
	b := e.bucket
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		b.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	}
	e.prev, e.next, e.bucket = nil, nil, nil
	if b.head != nil {
		return
	}
	if b.prev != nil {
		b.prev.next = b.next
	} else {
		s.min = b.next
	}
	if b.next != nil {
		b.next.prev = b.prev
	}
	*b = bucket{next: s.free}
	s.free = b
}

func (s *SpaceSaving) newBucket(count uint64) *bucket {
	b := s.free
	if b == nil {
		return &bucket{count: count}
	}
	s.free = b.next
	*b = bucket{count: count}
	return b
}

// Top returns up to n items with the highest counts, highest first (all when n <= 0).
func (s *SpaceSaving) Top(n int) []Item {
	out := make([]Item, 0, s.len)
	s.Each(func(it *Item) { out = append(out, *it) })
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

// Each calls fn for every monitored item, in no particular order, without allocating. fn must
// not change Count.
func (s *SpaceSaving) Each(fn func(*Item)) {
	for b := s.min; b != nil; b = b.next {
		for e := b.head; e != nil; e = e.next {
			fn(&e.Item)
		}
	}
}

// Total is the sum of all weights added (exact).
func (s *SpaceSaving) Total() uint64 { return s.total }

// Evictions counts names displaced so far; 0 means every count is exact.
func (s *SpaceSaving) Evictions() uint64 { return s.evictions }

// Len is the number of monitored names.
func (s *SpaceSaving) Len() int { return s.len }

// Capacity is the maximum number of monitored names.
func (s *SpaceSaving) Capacity() int { return s.capacity }

// Reset forgets everything.
func (s *SpaceSaving) Reset() {
	s.min, s.free, s.len = nil, nil, 0
	clear(s.slots)
	s.total, s.evictions = 0, 0
}
