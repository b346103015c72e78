package bpf

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
)

// Hot names (name_slot_tables in dns.c): a direct-mapped array of slots,
// each owned by one (pod, name) key, counted without the kernel hash table.
// The arrays are per CPU: the owner's key is written into every CPU's copy
// and a slot's counts are the sum over the CPUs.
// Two arrays alternate like the name tables: DrainNames swaps them, reads
// the counts of the one the programs left, and writes the owners it wants
// next into it, counts zeroed. Owners are only ever written into the array
// the programs do not use, so no count is lost.

const (
	// DefaultNameSlots is Options.NameSlots' default (24 KiB per CPU and
	// array), halved on nodes with many CPUs until slots x CPUs is at most
	// maxNameSlotCopies (1.5 MiB per array, and as much in the daemon).
	DefaultNameSlots  = 1024
	maxNameSlots      = 1 << 16
	maxNameSlotCopies = 1 << 16
	minNameSlots      = 64
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
	// cpus is the number of copies of each slot: the possible CPUs. buf
	// holds every copy of every slot, slot i's at i*cpus.
	cpus int
	buf  []dnsNameSlot
}

// defaultNameSlots is DefaultNameSlots, fewer when cpus copies of them would
// be more than maxNameSlotCopies.
func defaultNameSlots(cpus int) uint32 {
	n := uint32(DefaultNameSlots)
	for n > minNameSlots && int(n)*cpus > maxNameSlotCopies {
		n /= 2
	}
	return n
}

func newNameSlots(n uint32, cpus int) *nameSlots {
	ns := &nameSlots{mask: uint64(n - 1), info: map[uint64]*nameOwner{}, candidates: map[uint64]*nameOwner{},
		cpus: cpus, buf: make([]dnsNameSlot, int(n)*cpus)}
	for i := range ns.owners {
		ns.owners[i] = make([]uint64, n)
	}
	return ns
}

// slots is the number of slots per array.
func (ns *nameSlots) slots() int { return len(ns.owners[0]) }

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
	if len(ns.candidates) < candidatesPerSlot*ns.slots() {
		ns.candidates[key] = &nameOwner{cgroupID: k.CgroupId, name: nameText(v), lastCount: total}
	}
}

// drain swaps the arrays (the update waits for running programs), reports
// the counts of the array the programs left, and writes the owners wanted
// next into it.
func (ns *nameSlots) drain(outer *ebpf.Map, fn func(cgroupID uint64, name string, queries, nxdomain uint64)) error {
	// Nothing owned in either array and nothing to promote (a node without DNS traffic): the
	// swap, a map-in-map update that waits for an RCU grace period, would change nothing.
	if len(ns.candidates) == 0 && !slices.ContainsFunc(ns.owners[0], isOwned) && !slices.ContainsFunc(ns.owners[1], isOwned) {
		return nil
	}
	old, next := ns.active, 1-ns.active
	if err := outer.Update(uint32(0), ns.tables[next], ebpf.UpdateAny); err != nil {
		return fmt.Errorf("switch name slots: %w", err)
	}
	ns.active = next
	ns.drainNo++
	if err := ns.readArray(ns.tables[old]); err != nil {
		return err
	}
	for i, key := range ns.owners[old] {
		if key == 0 {
			continue
		}
		var queries, nxdomain uint64
		for _, e := range ns.buf[i*ns.cpus : (i+1)*ns.cpus] {
			queries += e.Queries
			nxdomain += e.Nxdomain
		}
		o := ns.info[key]
		if queries+nxdomain == 0 || o == nil { // o: cannot be nil, every key written is known
			continue
		}
		fn(o.cgroupID, o.name, queries, nxdomain)
		o.lastCount, o.lastSeen = max(queries, nxdomain), ns.drainNo
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
		ns.buf[i] = dnsNameSlot{Key: want[i/ns.cpus]}
	}
	if err := ns.writeArray(ns.tables[old]); err != nil {
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

func isOwned(key uint64) bool { return key != 0 }

// owned counts the slots owned in the array the programs use.
func (ns *nameSlots) owned() (n uint32) {
	for _, key := range ns.owners[ns.active] {
		if key != 0 {
			n++
		}
	}
	return n
}

// readArray reads every copy of every slot of m into buf.
func (ns *nameSlots) readArray(m *ebpf.Map) error {
	n := ns.slots()
	keys := make([]uint32, n)
	var cursor ebpf.MapBatchCursor
	got, err := m.BatchLookup(&cursor, keys, ns.buf, nil)
	if err == nil || errors.Is(err, ebpf.ErrKeyNotExist) {
		if got == n {
			return nil
		}
	} else if !errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("read name slots: %w", err)
	}
	for i := 0; i < n; i++ {
		if err := m.Lookup(uint32(i), ns.buf[i*ns.cpus:(i+1)*ns.cpus]); err != nil {
			return fmt.Errorf("read name slot %d: %w", i, err)
		}
	}
	return nil
}

// writeArray writes buf (every copy of every slot) into m.
func (ns *nameSlots) writeArray(m *ebpf.Map) error {
	n := ns.slots()
	keys := make([]uint32, n)
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := m.BatchUpdate(keys, ns.buf, nil); err == nil {
		return nil
	} else if !errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("write name slots: %w", err)
	}
	for i := 0; i < n; i++ {
		if err := m.Put(uint32(i), ns.buf[i*ns.cpus:(i+1)*ns.cpus]); err != nil {
			return fmt.Errorf("write name slot %d: %w", i, err)
		}
	}
	return nil
}
