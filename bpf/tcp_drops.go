package bpf

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/cilium/ebpf/btf"
)

// DropKey is one cgroup's drops for one reason. CgroupID 0: packets without a socket.
type DropKey struct {
	CgroupID uint64
	Reason   uint32 // enum skb_drop_reason of the running kernel (DropReasonName)
}

// DropCounters are packets (and their bytes) the kernel dropped, cumulative since load.
type DropCounters struct {
	Packets, Bytes uint64
}

// ReadDrops returns the drops counted by the kfree_skb tracepoint: per cgroup (the socket's,
// never the task's) and reason, for sockets at or below the root; drops of packets without a
// socket under CgroupID 0.
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
