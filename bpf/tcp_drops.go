package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

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
