package bpf

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
)

// pendingName is a name drained early, its wire bytes kept in
// DNSProbe.pendingWire (one reused buffer rather than a string per name: a
// flood's names are many, short-lived and turned into text only when
// handed over).
type pendingName struct {
	cgroupID          uint64
	queries, nxdomain uint64
	off, n            uint32
}

const (
	// earlyDrainEvery is how often the kernel's name insert counter is read;
	// a drain starts when the table is half full. The other half absorbs
	// 8,192 new names per 25 ms (330k/s) with the default table before any
	// overflow, and the kernel's batch drain walks every bucket, so a fuller
	// table costs less per name (BenchmarkDrainNames: 365 CPU ns per name a
	// quarter full, 318 half full).
	earlyDrainEvery = 25 * time.Millisecond
	// earlyDrainIdle is how often the counter is read while names come in
	// slower than MaxNames/8 per earlyDrainIdle (20k/s with the default
	// table): the table's free entries then absorb a flood of up to 164k
	// new names/s starting right after a read. Every wake-up of an idle
	// daemon costs (in a VM, a context switch and the Go scheduler's):
	// 10 reads a second instead of 40.
	earlyDrainIdle = 100 * time.Millisecond
	// maxPendingFactor x MaxNames bounds the names held between two
	// DrainNames calls, and maxPendingWireBytes their bytes (a flood of
	// 253-byte names would otherwise hold 8 x 16,384 x 255 = 33 MB against
	// the chart's 32 MiB GOMEMLIMIT); beyond either the kernel table
	// overflows (counted, isoobs_dns_name_overflow_total).
	maxPendingFactor    = 8
	maxPendingWireBytes = 4 << 20
)

// pendingFull says the names drained early fill what may be held until the next DrainNames.
// Callers hold p.mu.
func (p *DNSProbe) pendingFull() bool {
	return len(p.pending) >= maxPendingFactor*int(p.opts.MaxNames) || len(p.pendingWire) >= maxPendingWireBytes
}

func (p *DNSProbe) earlyDrainLoop() {
	defer close(p.earlyDrainDone)
	t := time.NewTimer(earlyDrainIdle)
	defer t.Stop()
	var last uint64
	lastAt := time.Now()
	for {
		select {
		case <-p.stopEarlyDrain:
			return
		case <-t.C:
		}
		now := time.Now()
		inserts, err := p.nameInserts()
		if err != nil {
			t.Reset(earlyDrainIdle)
			continue
		}
		p.mu.Lock()
		if !p.closed && inserts-p.insertsAtSwap >= uint64(p.opts.MaxNames/2) && !p.pendingFull() {
			// An error leaves the entries in the kernel table for DrainNames.
			_ = p.swapAndDrainRaw(func(k *dnsNameKey, v *dnsNameValue) {
				wire := entryWire(v)
				p.pending = append(p.pending, pendingName{k.CgroupId, v.Queries, v.Nxdomain, uint32(len(p.pendingWire)), uint32(len(wire))})
				p.pendingWire = append(p.pendingWire, wire...)
			})
		}
		p.mu.Unlock()
		t.Reset(earlyDrainInterval(inserts-last, now.Sub(lastAt), p.opts.MaxNames))
		last, lastAt = inserts, now
	}
}

// earlyDrainInterval is when to read the insert counter next, after n
// inserts in the last elapsed: soon while names come in fast enough to fill
// an eighth of the table within earlyDrainIdle, else after earlyDrainIdle.
func earlyDrainInterval(n uint64, elapsed time.Duration, maxNames uint32) time.Duration {
	if elapsed > 0 && float64(n)*float64(earlyDrainIdle)/float64(elapsed) >= float64(maxNames/8) {
		return earlyDrainEvery
	}
	return earlyDrainIdle
}

// nameInserts is the kernel's count of name table inserts, all CPUs.
// Only earlyDrainLoop calls it, without p.mu: its buffer is reused.
func (p *DNSProbe) nameInserts() (uint64, error) {
	if p.insertsBuf == nil {
		p.insertsBuf = make([]uint64, ebpf.MustPossibleCPU())
	}
	return p.sumStat(statNameInserts, p.insertsBuf)
}

// nameInsertsLocked is nameInserts for callers holding p.mu (a buffer of its own).
func (p *DNSProbe) nameInsertsLocked() (uint64, error) {
	if p.insertsBufLocked == nil {
		p.insertsBufLocked = make([]uint64, ebpf.MustPossibleCPU())
	}
	return p.sumStat(statNameInserts, p.insertsBufLocked)
}

// sumStat is probe_stats[i] summed over CPUs, read into buf.
func (p *DNSProbe) sumStat(i uint32, buf []uint64) (uint64, error) {
	if err := p.objs.ProbeStats.Lookup(i, buf); err != nil {
		return 0, err
	}
	var n uint64
	for _, v := range buf {
		n += v
	}
	return n, nil
}

// DrainNames calls fn for every (cgroup, query name) counted since the
// previous call and removes them from the kernel, so the bounded table
// never stays full. It is exact: the programs are switched to a second,
// empty table first, and the kernel waits for running programs before the
// switch returns, so no increment lands in the table being drained.
// Names are the question's labels joined by dots, A-Z lower-cased, without
// the trailing dot ("." for the root); other bytes are kept raw and are not
// escaped, so a name may hold non-UTF-8 bytes or a '.' inside a label.
// When a flood filled the kernel table between two calls, part of it was
// drained early and is handed over first: a (cgroup, name) may then come
// more than once in one call, and its counts add up.
func (p *DNSProbe) DrainNames(fn func(cgroupID uint64, name string, queries, nxdomain uint64)) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("dns probe is closed")
	}
	for _, n := range p.pending {
		name, _ := decodeWireName(p.pendingWire[n.off : n.off+n.n])
		fn(n.cgroupID, name, n.queries, n.nxdomain)
	}
	// Buffers sized for a flood are kept while it lasts (regrowing them
	// every interval was garbage at the flood's rate) and given back once
	// an interval used less than a quarter of them.
	if cap(p.pending) > int(p.opts.MaxNames) && len(p.pending) < cap(p.pending)/4 {
		p.pending, p.pendingWire = nil, nil
	} else {
		p.pending, p.pendingWire = p.pending[:0], p.pendingWire[:0]
	}
	// No name inserted since the last swap: the table the programs write is empty (it was
	// drained before they were switched to it), and swapping it, a map-in-map update that waits
	// for an RCU grace period, is most of an idle node's tick. An insert whose count the
	// kernel has not added yet is drained at the next call.
	if inserts, err := p.nameInsertsLocked(); err != nil || inserts != p.insertsAtSwap {
		if err := p.swapAndDrain(fn); err != nil {
			return err
		}
	}
	return p.slots.drain(p.objs.NameSlotTables, fn)
}

// swapAndDrain switches the programs to the other name table and drains the
// old one. Callers hold p.mu.
func (p *DNSProbe) swapAndDrain(fn func(cgroupID uint64, name string, queries, nxdomain uint64)) error {
	return p.swapAndDrainRaw(func(k *dnsNameKey, v *dnsNameValue) {
		fn(k.CgroupId, nameText(v), v.Queries, v.Nxdomain)
	})
}

// swapAndDrainRaw is swapAndDrain handing over the kernel's entries, valid
// during the call only. Every entry is also offered to the name slots.
func (p *DNSProbe) swapAndDrainRaw(fn func(k *dnsNameKey, v *dnsNameValue)) error {
	old := p.nameTables[p.active]
	next := p.nameTables[1-p.active]
	// Read before the switch: an insert counted after this read may have landed in either
	// table, and makes the next DrainNames swap (and drain) again.
	inserts, insertsErr := p.nameInsertsLocked()
	// An array-of-maps update returns only after synchronize_rcu(), i.e.
	// after every program that could still hold the old table has finished.
	if err := p.objs.NameTables.Update(uint32(0), next, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("switch name table: %w", err)
	}
	p.active = 1 - p.active
	if insertsErr == nil {
		p.insertsAtSwap = inserts
	} else {
		p.insertsAtSwap = ^uint64(0) // unknown: the next DrainNames swaps
	}
	return p.drainTable(old, func(k *dnsNameKey, v *dnsNameValue) {
		p.slots.noteDrained(k, v)
		fn(k, v)
	})
}

// drainBatch is how many entries one batch syscall moves (~312 KiB of values).
const drainBatch = 1024

func (p *DNSProbe) drainTable(m *ebpf.Map, fn func(k *dnsNameKey, v *dnsNameValue)) error {
	if p.batchKeys == nil {
		p.batchKeys = make([]dnsNameKey, drainBatch)
		p.batchVals = make([]dnsNameValue, drainBatch)
	}
	keys, vals := p.batchKeys, p.batchVals
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookupAndDelete(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			fn(&keys[i], &vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			return p.drainTableSlow(m, fn)
		}
		if err != nil {
			return fmt.Errorf("drain name table: %w", err)
		}
	}
}

// drainTableSlow is the fallback for kernels without batch operations
// (before 5.6). The table has no writer, so iterate-then-delete is exact.
func (p *DNSProbe) drainTableSlow(m *ebpf.Map, fn func(k *dnsNameKey, v *dnsNameValue)) error {
	var key dnsNameKey
	var val dnsNameValue
	var seen []dnsNameKey
	it := m.Iterate()
	for it.Next(&key, &val) {
		fn(&key, &val)
		seen = append(seen, key)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("drain name table: %w", err)
	}
	for _, k := range seen {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("drain name table: %w", err)
		}
	}
	return nil
}
