package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// MapFill is the fill level of a bounded kernel map.
type MapFill struct {
	Entries uint32
	Max     uint32
}

// ProbeStats are the probe's own health counters, cumulative since load.
type ProbeStats struct {
	Pods     MapFill // per-cgroup counters
	PodSlots MapFill // pods counted on the fast path (slots assigned by ReadPods)
	// LatencySampledPods is the number of pods whose latency is sampled now
	// (they send more than Options.LatencySampleAbove queries a second).
	LatencySampledPods uint32
	Names              MapFill // name table currently written (emptied by DrainNames)
	// NameSlots: hot (pod, name) pairs counted outside the name table, in
	// the array the programs use.
	NameSlots MapFill
	Inflight  MapFill // queries awaiting their response

	PodOverflow        uint64 // DNS packets not counted because the pod map was full
	NameOverflow       uint64 // name increments not counted because the name table was full
	InflightInserted   uint64 // client queries timed (remembered for latency matching)
	InflightDuplicates uint64 // queries whose 5-tuple+id was already pending (retransmits)
	InflightMatched    uint64 // responses matched with their query (latency samples)
	InflightEvicted    uint64 // pending queries replaced by another query hashed to the same slot
	InflightExpired    uint64 // queries never answered within Options.DNSTimeout (found when their slot was reused)
	InflightErrors     uint64 // unused since the inflight table is an array; kept for compatibility
	// UnmatchedResponses counts the answers that matched no pending query
	// (unsolicited: forged, or a duplicate answer), kept out of the pods'
	// responses, rcodes and names.
	UnmatchedResponses uint64
	LateAnswers        uint64 // answers to a pending query older than Options.DNSTimeout
	EvictedAnswers     uint64 // answers to a query evicted from the in-flight table (counted, not timed)
	TraceLost          uint64 // trace events not sent: the trace ring buffer was full
	Malformed          uint64 // all cgroups, including ones beyond the pod map
	NotParsed          uint64 // fragments, too many IPv6 extension headers
	DNSMessages        uint64 // port-53 payloads examined
}

// Indexes of the probe_stats array, mirroring enum probe_stat in dns.c.
const (
	statPodOverflow = iota
	statNameOverflow
	statInflightInserts
	statInflightDuplicates
	statInflightMatched
	statUnmatchedResponses
	statMalformed
	statNotParsed
	statDNSMessages
	statInflightEvicted
	statInflightExpired
	statNameInserts
	statLateAnswers
	statEvictedAnswers
	statTraceLost
	statMax
)

// Stats returns the probe's health counters and map fill levels.
func (p *DNSProbe) Stats() (ProbeStats, error) {
	var s ProbeStats
	var counters [statMax]uint64
	for i := range counters {
		var perCPU []uint64
		if err := p.objs.ProbeStats.Lookup(uint32(i), &perCPU); err != nil {
			return s, fmt.Errorf("read probe stats: %w", err)
		}
		for _, v := range perCPU {
			counters[i] += v
		}
	}
	s.PodOverflow = counters[statPodOverflow]
	s.NameOverflow = counters[statNameOverflow]
	s.InflightInserted = counters[statInflightInserts]
	s.InflightDuplicates = counters[statInflightDuplicates]
	s.InflightMatched = counters[statInflightMatched]
	s.UnmatchedResponses = counters[statUnmatchedResponses]
	s.Malformed = counters[statMalformed]
	s.NotParsed = counters[statNotParsed]
	s.DNSMessages = counters[statDNSMessages]
	s.InflightEvicted = counters[statInflightEvicted]
	s.InflightExpired = counters[statInflightExpired]
	s.LateAnswers = counters[statLateAnswers]
	s.EvictedAnswers = counters[statEvictedAnswers]
	s.TraceLost = counters[statTraceLost]

	p.mu.Lock()
	names := p.nameTables[p.active]
	s.NameSlots = MapFill{Entries: p.slots.owned(), Max: uint32(p.slots.slots())}
	p.mu.Unlock()
	var err error
	if s.Pods, err = fill(p.objs.PodStats); err != nil {
		return s, err
	}
	if s.Names, err = fill(names); err != nil {
		return s, err
	}
	waiting, err := p.walkInflight()
	if err != nil {
		return s, err
	}
	s.Inflight = waiting.fill
	p.slotMu.Lock()
	s.PodSlots.Max = uint32(len(p.slotOwner))
	for i, owner := range p.slotOwner {
		if owner != 0 {
			s.PodSlots.Entries++
			if p.slotShift[i] > 0 {
				s.LatencySampledPods++
			}
		}
	}
	p.slotMu.Unlock()
	return s, nil
}

// NamedMapFill is the fill level of one kernel map, by the map's name in
// Status and metrics.
type NamedMapFill struct {
	Name string
	MapFill
}

// Maps lists the fill levels by map name.
func (s ProbeStats) Maps() []NamedMapFill {
	return []NamedMapFill{{"pod_stats", s.Pods}, {"pod_slots", s.PodSlots}, {"names", s.Names}, {"name_slots", s.NameSlots}, {"inflight", s.Inflight}}
}

// inflightWays mirrors INFLIGHT_WAYS in dns.c.
const inflightWays = 4

// inflightWalk is what the in-flight table holds: the queries waiting for
// their answer (fill), and per cgroup id those waiting longer than
// Options.DNSTimeout, not yet counted as timed out by the kernel.
type inflightWalk struct {
	fill     MapFill
	timedOut map[uint64]uint64
}

// walkInflight reads the in-flight table (bpf_ktime_get_ns is
// CLOCK_MONOTONIC): 16 KiB by default, a few batched reads.
func (p *DNSProbe) walkInflight() (inflightWalk, error) {
	m := p.objs.Inflight
	w := inflightWalk{fill: MapFill{Max: m.MaxEntries() * inflightWays}}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return w, err
	}
	now, timeout := uint64(ts.Nano()), uint64(p.opts.DNSTimeout)
	keys := make([]uint32, 1024)
	vals := make([]dnsInflightSet, 1024)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for _, set := range vals[:n] {
			for _, v := range set.Way {
				switch {
				case v.SentNs == 0:
				case now < v.SentNs || now-v.SentNs < timeout:
					w.fill.Entries++
				case v.Cgroup != 0:
					if w.timedOut == nil {
						w.timedOut = make(map[uint64]uint64)
					}
					w.timedOut[uint64(v.Cgroup)]++
				}
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return w, nil
		}
		if err != nil {
			return w, fmt.Errorf("read pending queries: %w", err)
		}
	}
}

// fill counts a map's entries by walking its keys (the kernel keeps no
// cheap count); it is meant for periodic health reporting, not hot paths.
func fill(m *ebpf.Map) (MapFill, error) {
	f := MapFill{Max: m.MaxEntries()}
	var prev any // nil: start from the first key
	for {
		next, err := m.NextKeyBytes(prev)
		if err != nil {
			return f, fmt.Errorf("count entries of map %s: %w", m, err)
		}
		if next == nil {
			return f, nil
		}
		f.Entries++
		prev = next
		if f.Entries >= f.Max { // LRU/hash maps change under us; never loop forever
			return f, nil
		}
	}
}
