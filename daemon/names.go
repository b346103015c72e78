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
	s.addName(drainedNameOf(name, zoneOf(name)), queries, nxdomain)
}

// drainedName is a query name and its parent (zoneOf, "" for none) with their topk hashes, worked
// out once for a name fed to several summaries.
type drainedName struct {
	name, zone         string
	nameHash, zoneHash uint64
}

func drainedNameOf(name, zone string) drainedName {
	k := drainedName{name: name, zone: zone, nameHash: topk.Hash(name)}
	if zone != "" {
		k.zoneHash = topk.Hash(zone)
	}
	return k
}

func (s *nameSummary) addName(k drainedName, queries, nxdomain uint64) {
	s.names.AddHashed(k.name, k.nameHash, queries, nxdomain)
	if k.zone != "" {
		s.zones.AddHashed(k.zone, k.zoneHash, queries, nxdomain)
	}
}

// zoneCacheSize bounds a zoneCache; past it the cache starts over (a flood of random parents
// then costs one string per name, as without the cache).
const zoneCacheSize = 4096

// zoneCache hands out zoneOf(name) without building a new string for a parent seen before:
// in a random-subdomain flood every name differs but the parent is the same, and building
// "*.parent" per name was one allocation per name per summary.
type zoneCache map[string]zoneEntry // parent without "*." -> "*.parent" and its hash

type zoneEntry struct {
	zone string
	hash uint64
}

// key returns the name's drainedName, its parent taken from the cache.
func (c zoneCache) key(name string) drainedName {
	k := drainedName{name: name, nameHash: topk.Hash(name)}
	parent, ok := parentOf(name)
	if !ok {
		return k
	}
	z, ok := c[parent]
	if !ok {
		if len(c) >= zoneCacheSize {
			clear(c)
		}
		z.zone = "*." + parent
		z.hash = topk.Hash(z.zone)
		c[z.zone[2:]] = z // keyed by the zone's own bytes, so the cache does not pin the name
	}
	k.zone, k.zoneHash = z.zone, z.hash
	return k
}

// zoneOf is the wildcard parent of a name with at least three labels:
// "a.b.c" → "*.b.c". Shorter names have no parent worth aggregating under.
func zoneOf(name string) string {
	if parent, ok := parentOf(name); ok {
		return "*." + parent
	}
	return ""
}

// parentOf is name without its first label, if that leaves at least two labels.
func parentOf(name string) (string, bool) {
	i := strings.IndexByte(name, '.')
	if i < 0 || strings.IndexByte(name[i+1:], '.') < 0 {
		return "", false
	}
	return name[i+1:], true
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
