package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// DropKey is one cgroup's drops for one reason. CgroupID 0: packets without a socket that are
// not counted per destination (ReadDropDestinations' table was full).
type DropKey struct {
	CgroupID uint64
	Reason   uint32 // enum skb_drop_reason of the running kernel (DropReasonName)
}

// DropCounters are packets (and their bytes) the kernel dropped, cumulative since load.
type DropCounters struct {
	Packets, Bytes uint64
}

// ReadDrops returns the drops counted by the kfree_skb tracepoint: per cgroup (the socket's,
// never the task's) and reason, for sockets at or below the root. Drops of packets without a
// socket are in ReadDropDestinations, and under CgroupID 0 here those its table had no room for.
func (p *TCPProbe) ReadDrops() (map[DropKey]DropCounters, error) {
	out := map[DropKey]DropCounters{}
	var k tcpDropKey
	var perCPU []tcpDropValue
	it := p.objs.DropStats.Iterate()
	for it.Next(&k, &perCPU) {
		var c DropCounters
		for _, v := range perCPU {
			c.Packets += v.Packets
			c.Bytes += v.Bytes
		}
		out[DropKey{CgroupID: k.CgroupId, Reason: k.Reason}] = c
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read drop counters: %w", err)
	}
	return out, nil
}

// DropDstKey is drops of packets without a socket, per destination address and reason. Addr is
// the IP header's destination (IPv4 unmapped), the invalid Addr for a packet that is no IP
// packet or whose network header was not set.
type DropDstKey struct {
	Addr   netip.Addr
	Reason uint32
}

// DefaultDropDestinations bounds the per-destination table of socket-less drops.
const DefaultDropDestinations = 4096

// ReadDropDestinations returns the drops of packets without a socket (most ingress drops, before
// the socket lookup: netfilter, routing, a closed port) per destination address and reason,
// cumulative since load. Past the table's bound such drops are counted in ReadDrops under
// CgroupID 0 and in TCPStats.DropDstOverflow.
func (p *TCPProbe) ReadDropDestinations() (map[DropDstKey]DropCounters, error) {
	out := map[DropDstKey]DropCounters{}
	var k tcpDropDstKey
	var perCPU []tcpDropValue
	it := p.objs.DropDsts.Iterate()
	for it.Next(&k, &perCPU) {
		var c DropCounters
		for _, v := range perCPU {
			c.Packets += v.Packets
			c.Bytes += v.Bytes
		}
		out[DropDstKey{Addr: dropDstAddr(k.Addr), Reason: k.Reason}] = c
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read drop destinations: %w", err)
	}
	return out, nil
}

// DeleteDropDestinations removes per-destination entries (idle ones, so the bounded table keeps
// room for new addresses) and returns the counters each deleted entry held when it was removed:
// the kernel copies them and unlinks the entry under the bucket's lock in one call
// (BPF_MAP_LOOKUP_AND_DELETE_ELEM, Linux 5.14+), so a drop counted between the caller's last read
// and the delete is in the returned counters, not lost, and a later drop to the address makes a
// new entry that starts from zero. What can still be lost: an increment by a program that found
// the entry before it was unlinked and writes it after the copy (the kfree_skb program's
// lookup-then-add, nanoseconds; the caller deletes entries idle for a minute). Keys that no
// longer exist are left out of the result.
func (p *TCPProbe) DeleteDropDestinations(keys []DropDstKey) (map[DropDstKey]DropCounters, error) {
	out := make(map[DropDstKey]DropCounters, len(keys))
	var errs []error
	for _, k := range keys {
		kk := dropDstKernelKey(k)
		var perCPU []tcpDropValue
		err := p.objs.DropDsts.LookupAndDelete(&kk, &perCPU)
		if errors.Is(err, ebpf.ErrNotSupported) {
			// Before Linux 5.14 (the program needs 5.17's drop reasons, so only in theory):
			// read, then delete; an increment in between is lost.
			if err = p.objs.DropDsts.Lookup(&kk, &perCPU); err == nil {
				err = p.objs.DropDsts.Delete(&kk)
			}
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("delete drop destination %v: %w", k.Addr, err))
			continue
		}
		var c DropCounters
		for _, v := range perCPU {
			c.Packets += v.Packets
			c.Bytes += v.Bytes
		}
		out[k] = c
	}
	return out, errors.Join(errs...)
}

// dropDstKernelKey is the kernel's key of k: IPv4 as IPv4-mapped, the invalid Addr as zeros.
func dropDstKernelKey(k DropDstKey) tcpDropDstKey {
	kk := tcpDropDstKey{Reason: k.Reason}
	if k.Addr.IsValid() {
		kk.Addr = k.Addr.As16()
	}
	return kk
}

// dropDstAddr is the kernel's 16-byte address (IPv4-mapped for IPv4) as a netip.Addr; all
// zeros (not recorded) is the invalid Addr.
func dropDstAddr(b [16]uint8) netip.Addr {
	if b == ([16]uint8{}) {
		return netip.Addr{}
	}
	return netip.AddrFrom16(b).Unmap()
}

var dropReasons struct {
	once  sync.Once
	names map[uint32]string
	err   error
}

// DropReasonName is the kernel's name of a drop reason without its SKB_DROP_REASON_ prefix
// (NETFILTER_DROP, NO_SOCKET, TCP_CSUM, ...), read from the running kernel's BTF: the numbers
// change between kernels, the names are what `perf`, pwru and dropwatch print.
func DropReasonName(reason uint32) string {
	dropReasons.once.Do(func() {
		dropReasons.names, dropReasons.err = loadDropReasons()
	})
	if n, ok := dropReasons.names[reason]; ok {
		return n
	}
	return fmt.Sprintf("REASON_%d", reason)
}

func loadDropReasons() (map[uint32]string, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, err
	}
	var enum *btf.Enum
	if err := spec.TypeByName("skb_drop_reason", &enum); err != nil {
		return nil, errors.Join(errors.New("kernel BTF has no enum skb_drop_reason"), err)
	}
	names := make(map[uint32]string, len(enum.Values))
	for _, v := range enum.Values {
		names[uint32(v.Value)] = strings.TrimPrefix(v.Name, "SKB_DROP_REASON_")
	}
	return names, nil
}
