package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// Hot names (name_slot_tables in dns.c): a direct-mapped array of slots,
// each owned by one (pod, name) key, counted without the kernel hash table.
// Two arrays alternate like the name tables: DrainNames swaps them, reads
// the counts of the one the programs left, and writes the owners it wants
// next into it, counts zeroed. Owners are only ever written into the array
// the programs do not use, so no count is lost.

const (
	// DefaultNameSlots is Options.NameSlots' default: 32 KiB per array, small
	// enough to be kmalloc'ed (its random accesses then hit the TLB).
	DefaultNameSlots = 1024
	maxNameSlots     = 1 << 16
	// A name drained at least promoteMin times in one interval gets a free
	// slot, or takes one from an owner it beat more than twice over in the
	// last interval; an owner not counted for idleDrains intervals is
	// dropped. A name's count here is the larger of its queries and its
	// NXDOMAIN answers: a name queried once and answered NXDOMAIN (a
	// random-subdomain flood's) counts once.
	promoteMin = 2
	idleDrains = 30
	// candidatesPerSlot x slots bounds the names remembered between two
	// DrainNames as possible owners (a flood's names, each seen once, never
	// are).
	candidatesPerSlot = 4
)

// nameSlotKey mirrors name_slot_key in dns.c.
func nameSlotKey(nameHash, cgroupID uint64) uint64 {
	h := (nameHash ^ cgroupID) * 0x9e3779b97f4a7c15
	return (h ^ h>>29) | 1
}

// nameOwner is what userspace knows of a slot's owner (the kernel keeps the
// key only).
type nameOwner struct {
	cgroupID  uint64
	name      string
	lastCount uint64 // queries+nxdomain in the last array read
	lastSeen  uint64 // drainNo of the last read with counts
}

type nameSlots struct {
	tables [2]*ebpf.Map
	active int         // index in tables of the array the programs write
	owners [2][]uint64 // keys written into each array (0: free)
	mask   uint64
	info   map[uint64]*nameOwner
	// candidates: names drained promoteMin+ times since the last DrainNames.
	candidates map[uint64]*nameOwner
	drainNo    uint64
	buf        []dnsNameSlot
}

func newNameSlots(n uint32) *nameSlots {
	ns := &nameSlots{mask: uint64(n - 1), info: map[uint64]*nameOwner{}, candidates: map[uint64]*nameOwner{},
		buf: make([]dnsNameSlot, n)}
	for i := range ns.owners {
		ns.owners[i] = make([]uint64, n)
	}
	return ns
}

func (ns *nameSlots) index(key uint64) uint64 { return key >> 32 & ns.mask }

// noteDrained remembers a name drained from the hash table as a possible
// slot owner.
func (ns *nameSlots) noteDrained(k *dnsNameKey, v *dnsNameValue) {
	total := max(v.Queries, v.Nxdomain)
	if total < promoteMin {
		return
	}
	key := nameSlotKey(k.NameHash, k.CgroupId)
	if c := ns.candidates[key]; c != nil {
		c.lastCount += total
		return
	}
	if len(ns.candidates) < candidatesPerSlot*len(ns.buf) {
		ns.candidates[key] = &nameOwner{cgroupID: k.CgroupId, name: nameText(v), lastCount: total}
	}
}

// drain swaps the arrays (the update waits for running programs), reports
// the counts of the array the programs left, and writes the owners wanted
// next into it.
func (ns *nameSlots) drain(outer *ebpf.Map, fn func(cgroupID uint64, name string, queries, nxdomain uint64)) error {
	old, next := ns.active, 1-ns.active
	if err := outer.Update(uint32(0), ns.tables[next], ebpf.UpdateAny); err != nil {
		return fmt.Errorf("switch name slots: %w", err)
	}
	ns.active = next
	ns.drainNo++
	if err := readArray(ns.tables[old], ns.buf); err != nil {
		return err
	}
	for i := range ns.buf {
		e := &ns.buf[i]
		if e.Key == 0 || e.Queries+e.Nxdomain == 0 {
			continue
		}
		o := ns.info[e.Key]
		if o == nil { // cannot happen: every key written is known
			continue
		}
		fn(o.cgroupID, o.name, e.Queries, e.Nxdomain)
		o.lastCount, o.lastSeen = max(e.Queries, e.Nxdomain), ns.drainNo
	}

	// The owners wanted next: the ones in the array the programs now use,
	// less the idle, plus or instead of the candidates.
	want := ns.owners[old]
	copy(want, ns.owners[next])
	for i, key := range want {
		if key != 0 && ns.drainNo-ns.info[key].lastSeen > idleDrains {
			want[i] = 0
		}
	}
	for key, c := range ns.candidates {
		i := ns.index(key)
		cur := want[i]
		if cur == key || cur != 0 && c.lastCount <= 2*ns.info[cur].lastCount {
			continue
		}
		want[i] = key
		if ns.info[key] == nil {
			c.lastSeen = ns.drainNo
			ns.info[key] = c
		}
	}
	clear(ns.candidates)
	for i := range ns.buf {
		ns.buf[i] = dnsNameSlot{Key: want[i]}
	}
	if err := writeArray(ns.tables[old], ns.buf); err != nil {
		return err
	}
	// Forget owners in neither array.
	for key := range ns.info {
		i := ns.index(key)
		if ns.owners[0][i] != key && ns.owners[1][i] != key {
			delete(ns.info, key)
		}
	}
	return nil
}

// owned counts the slots owned in the array the programs use.
func (ns *nameSlots) owned() (n uint32) {
	for _, key := range ns.owners[ns.active] {
		if key != 0 {
			n++
		}
	}
	return n
}

// readArray reads a whole array map of name slots.
func readArray(m *ebpf.Map, out []dnsNameSlot) error {
	keys := make([]uint32, len(out))
	var cursor ebpf.MapBatchCursor
	n, err := m.BatchLookup(&cursor, keys, out, nil)
	if err == nil || errors.Is(err, ebpf.ErrKeyNotExist) {
		if n == len(out) {
			return nil
		}
	} else if !errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("read name slots: %w", err)
	}
	for i := range out {
		if err := m.Lookup(uint32(i), &out[i]); err != nil {
			return fmt.Errorf("read name slot %d: %w", i, err)
		}
	}
	return nil
}

// writeArray writes a whole array map of name slots.
func writeArray(m *ebpf.Map, in []dnsNameSlot) error {
	keys := make([]uint32, len(in))
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := m.BatchUpdate(keys, in, nil); err == nil {
		return nil
	} else if !errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("write name slots: %w", err)
	}
	for i := range in {
		if err := m.Put(uint32(i), in[i]); err != nil {
			return fmt.Errorf("write name slot %d: %w", i, err)
		}
	}
	return nil
}
