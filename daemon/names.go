package daemon

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/isoobs/isoobs/daemon/topk"
	"github.com/isoobs/isoobs/daemon/window"
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

// maxNameRegex bounds a --name expression: RE2 runs in time linear in the name, but a huge
// expression still costs memory and time per name on every filtered stream.
const maxNameRegex = 512

// nameFilter is a stream's query-name filter (TopRequest name_regex and zone): only names it
// keeps reach the stream's rows, name lists and counts.
type nameFilter struct {
	re   *regexp.Regexp
	zone string // lower case, no trailing dot
}

// newNameFilter checks a request's name_regex and zone; nil when both are empty.
func newNameFilter(expr, zone string) (*nameFilter, error) {
	if expr == "" && strings.TrimSpace(zone) == "" {
		return nil, nil
	}
	f := &nameFilter{}
	if expr != "" {
		if len(expr) > maxNameRegex {
			return nil, fmt.Errorf("name_regex is %d bytes, more than the %d a daemon accepts", len(expr), maxNameRegex)
		}
		re, err := regexp.Compile("(?i)" + expr)
		if err != nil {
			return nil, fmt.Errorf("name_regex %q is not an RE2 expression: %v", expr, err)
		}
		f.re = re
	}
	if zone != "" {
		z, err := normalizeZone(zone)
		if err != nil {
			return nil, err
		}
		f.zone = z
	}
	return f, nil
}

// normalizeZone is a --zone value in the form match compares: lower case, without a trailing
// dot or a leading "*.".
func normalizeZone(zone string) (string, error) {
	z := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(zone), "*."), "."))
	if z == "" {
		return "", errors.New("zone is empty: give a domain such as example.com")
	}
	if len(z) > 253 {
		return "", fmt.Errorf("zone is %d bytes; a domain name has at most 253", len(z))
	}
	for _, label := range strings.Split(z, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("zone %q is not a domain name (empty or over-long label)", zone)
		}
	}
	return z, nil
}

// match says whether the filter keeps a query name (presentation form, as the probe and
// Hubble report it; a trailing dot is ignored, and so is case).
func (f *nameFilter) match(name string) bool {
	n := strings.TrimSuffix(name, ".")
	if f.zone != "" {
		if len(n) < len(f.zone) || !strings.EqualFold(n[len(n)-len(f.zone):], f.zone) {
			return false
		}
		if len(n) > len(f.zone) && n[len(n)-len(f.zone)-1] != '.' {
			return false
		}
	}
	return f.re == nil || f.re.MatchString(n)
}

// matchedNames are one subject's queries for names a stream's filter keeps, counted exactly
// from the stream's start (every drained name increment adds up), with their history for rates.
type matchedNames struct {
	queries, nxdomain uint64
	series            *window.Series[[2]uint64]
}

// count adds a kept name's increment to the subject's matched counts. Called while the
// collector ticks: the clock's latest tick is the one being counted.
func (s *nameSink) count(key string, q, nx uint64) {
	if s.matched == nil {
		s.matched = map[string]*matchedNames{}
	}
	tick, _, _ := s.clock.Latest()
	m := s.matched[key]
	if m == nil {
		m = &matchedNames{series: window.NewSeriesLayout[[2]uint64](s.clock.Layout(), tick)}
		s.matched[key] = m
	}
	m.queries += q
	m.nxdomain += nx
	m.series.Set(tick, [2]uint64{m.queries, m.nxdomain})
}
