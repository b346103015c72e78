package daemon

import (
	"strings"

	"github.com/isoobs/isoobs/daemon/topk"
)

// topZones is how many parent domains a row carries. A random-subdomain flood
// (a "water torture" attack, or a crawler gone wrong) sends millions of names seen
// once each: no single name ranks, but their common parent does, exactly.
const topZones = 3

// zoneCapacity bounds the parent-domain summary; parents are far fewer than names.
const zoneCapacity = 32

// nameSummary keeps the heavy hitters among query names and among their parent
// domains ("*.crawl.example" for "x1y2.crawl.example"), both in bounded memory.
type nameSummary struct {
	names *topk.SpaceSaving
	zones *topk.SpaceSaving
}

func newNameSummary(capacity int) *nameSummary {
	return &nameSummary{names: topk.New(capacity), zones: topk.New(zoneCapacity)}
}

func (s *nameSummary) Add(name string, queries, nxdomain uint64) {
	s.names.Add(name, queries, nxdomain)
	if z := zoneOf(name); z != "" {
		s.zones.Add(z, queries, nxdomain)
	}
}

// zoneOf is the wildcard parent of a name with at least three labels:
// "a.b.c" → "*.b.c". Shorter names have no parent worth aggregating under.
func zoneOf(name string) string {
	i := strings.IndexByte(name, '.')
	if i < 0 || strings.Count(name[i+1:], ".") < 1 {
		return ""
	}
	return "*" + name[i:]
}

func summaries(ns []*nameSummary, zones bool) []*topk.SpaceSaving {
	out := make([]*topk.SpaceSaving, 0, len(ns))
	for _, n := range ns {
		if zones {
			out = append(out, n.zones)
		} else {
			out = append(out, n.names)
		}
	}
	return out
}
