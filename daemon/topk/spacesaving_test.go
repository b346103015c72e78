package topk

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
)

func TestExactWhileNotOverflowed(t *testing.T) {
	s := New(8)
	truth := map[string]uint64{}
	nx := map[string]uint64{}
	for i := range 1000 {
		name := fmt.Sprintf("n%d.example.", i%5)
		w := uint64(i%3 + 1)
		var x uint64
		if i%7 == 0 {
			x = 1
		}
		s.Add(name, w, x)
		truth[name] += w
		nx[name] += x
	}
	if s.Evictions() != 0 {
		t.Fatalf("evictions = %d with 5 names in capacity 8", s.Evictions())
	}
	top := s.Top(0)
	if len(top) != 5 {
		t.Fatalf("got %d items, want 5", len(top))
	}
	var sum uint64
	for i, it := range top {
		if it.Count != truth[it.Name] || it.Error != 0 || it.NXDomain != nx[it.Name] {
			t.Errorf("%s: count %d err %d nx %d, want %d 0 %d", it.Name, it.Count, it.Error, it.NXDomain, truth[it.Name], nx[it.Name])
		}
		if i > 0 && top[i-1].Count < it.Count {
			t.Errorf("not sorted at %d", i)
		}
		sum += it.Count
	}
	if sum != s.Total() {
		t.Errorf("total %d, sum %d", s.Total(), sum)
	}
	if got := s.Top(2); len(got) != 2 || got[0] != top[0] {
		t.Errorf("Top(2) = %v", got)
	}
}

// TestErrorBounds checks the Space-Saving guarantees on a skewed stream with far more distinct
// names than counters: every estimate brackets the truth, the bound is <= total/capacity, and
// every name heavier than total/capacity is monitored.
func TestErrorBounds(t *testing.T) {
	for _, capacity := range []int{4, 32, 256} {
		t.Run(fmt.Sprint(capacity), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(capacity)))
			zipf := rand.NewZipf(rand.New(rand.NewPCG(2, 3)), 1.2, 1, 5000)
			s := New(capacity)
			truth := map[string]uint64{}
			for range 200000 {
				name := fmt.Sprintf("q%d.", zipf.Uint64())
				w := uint64(rng.IntN(3) + 1)
				s.Add(name, w, 0)
				truth[name] += w
			}
			if s.Evictions() == 0 {
				t.Fatal("stream did not overflow the summary; test is not testing anything")
			}
			bound := s.Total() / uint64(capacity)
			monitored := map[string]bool{}
			for _, it := range s.Top(0) {
				monitored[it.Name] = true
				tr := truth[it.Name]
				if it.Count < tr || it.Count-it.Error > tr {
					t.Errorf("%s: estimate [%d,%d] does not contain true %d", it.Name, it.Count-it.Error, it.Count, tr)
				}
				if it.Error > bound {
					t.Errorf("%s: error %d > total/capacity %d", it.Name, it.Error, bound)
				}
			}
			for name, tr := range truth {
				if tr > bound && !monitored[name] {
					t.Errorf("heavy hitter %s (%d > %d) not monitored", name, tr, bound)
				}
			}
			var sum uint64
			for _, v := range truth {
				sum += v
			}
			if sum != s.Total() {
				t.Errorf("total %d, truth %d", s.Total(), sum)
			}
		})
	}
}

func TestReset(t *testing.T) {
	s := New(2)
	s.Add("a", 1, 0)
	s.Add("b", 1, 0)
	s.Add("c", 1, 0)
	s.Reset()
	if s.Len() != 0 || s.Total() != 0 || s.Evictions() != 0 {
		t.Fatalf("reset left %d items, total %d", s.Len(), s.Total())
	}
	s.Add("d", 3, 1)
	if top := s.Top(0); len(top) != 1 || top[0] != (Item{Name: "d", Count: 3, NXDomain: 1}) {
		t.Fatalf("after reset: %v", top)
	}
}

func BenchmarkAddUnique(b *testing.B) {
	names := make([]string, 1<<16)
	for i := range names {
		names[i] = fmt.Sprintf("u%d.flood.example.", i)
	}
	s := New(64)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.Add(names[i&(len(names)-1)], 1, 0)
	}
}

// TestBoundsRandomWeights checks the Space-Saving guarantees on a skewed stream with weights
// above 1 (moves across several buckets): counts sum to the total, every true count is in
// [Count-Error, Count], and every name counted more than the minimum is monitored.
func TestBoundsRandomWeights(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s := New(16)
	truth := map[string]uint64{}
	for range 20000 {
		name := "n" + strconv.Itoa(int(rng.ExpFloat64()*20))
		w := uint64(rng.IntN(4)) // 0..3: weight 0 carries only NXDOMAIN counts
		s.Add(name, w, 1)
		truth[name] += w
	}
	var sum, least uint64 = 0, ^uint64(0)
	monitored := map[string]bool{}
	for _, it := range s.Top(0) {
		sum += it.Count
		least = min(least, it.Count)
		if monitored[it.Name] {
			t.Errorf("%s monitored twice", it.Name)
		}
		monitored[it.Name] = true
		if tc := truth[it.Name]; tc > it.Count || tc < it.Count-it.Error {
			t.Errorf("%s: true %d not in [%d, %d]", it.Name, tc, it.Count-it.Error, it.Count)
		}
	}
	if sum != s.Total() || s.Len() != 16 {
		t.Fatalf("counts sum to %d, total %d, len %d", sum, s.Total(), s.Len())
	}
	for name, tc := range truth {
		if tc > least && !monitored[name] {
			t.Errorf("%s counted %d > minimum %d but not monitored", name, tc, least)
		}
	}
}
