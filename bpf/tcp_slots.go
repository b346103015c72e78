package bpf

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"
)

// cgroupSlots is tcp_cgroup_slots seen through its memory mapping (BPF_F_MMAPABLE): one row
// of slots a CPU, slot i of CPU c at key c<<shift | i (see counters_of in tcp.c). Reading a
// slot is a copy, not a syscall a CPU.
type cgroupSlots struct {
	mem   *ebpf.Memory
	shift uint32
	cpus  int
}

const cgroupSlotSize = int64(unsafe.Sizeof(tcpCgroupSlot{}))

func newCgroupSlots(m *ebpf.Map, shift uint32) (cgroupSlots, error) {
	mem, err := m.Memory()
	if err != nil {
		return cgroupSlots{}, fmt.Errorf("map the tcp cgroup slots: %w", err)
	}
	cpus := int(m.MaxEntries() >> shift)
	if int64(mem.Size()) < int64(m.MaxEntries())*cgroupSlotSize {
		return cgroupSlots{}, fmt.Errorf("tcp cgroup slots: %d bytes mapped, want %d", mem.Size(), int64(m.MaxEntries())*cgroupSlotSize)
	}
	return cgroupSlots{mem: mem, shift: shift, cpus: cpus}, nil
}

func (s cgroupSlots) offset(cpu int, i int) int64 {
	return int64(cpu<<s.shift|i) * cgroupSlotSize
}

// counters appends slot i's counters on every CPU to to.
func (s cgroupSlots) counters(i int, to []tcpTcpCounters) ([]tcpTcpCounters, error) {
	var v tcpCgroupSlot
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&v)), cgroupSlotSize)
	for cpu := range s.cpus {
		if _, err := s.mem.ReadAt(buf, s.offset(cpu, i)); err != nil {
			return to, fmt.Errorf("read tcp cgroup slot %d of CPU %d: %w", i, cpu, err)
		}
		to = append(to, v.C)
	}
	return to, nil
}

// own gives slot i to cgroup id on every CPU (0: frees it). No program writes a slot before
// it sees its cgroup there, so the counters are cleared first and the owner written last.
func (s cgroupSlots) own(i int, id uint64) error {
	var zero tcpCgroupSlot
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&zero)), cgroupSlotSize)
	var owner [8]byte
	binary.NativeEndian.PutUint64(owner[:], id)
	for cpu := range s.cpus {
		off := s.offset(cpu, i)
		if id != 0 {
			if _, err := s.mem.WriteAt(buf[8:], off+8); err != nil {
				return err
			}
		}
		if _, err := s.mem.WriteAt(owner[:], off); err != nil {
			return err
		}
	}
	return nil
}
