package bpf

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// DropLocationKey is where the kernel dropped packets: the address that freed them (inside the
// function that dropped them; KernelFunction names it) and the drop reason.
type DropLocationKey struct {
	Location uint64
	Reason   uint32
}

// ReadDropLocations returns the packets dropped per location and reason, node-wide, over the
// drops ReadDrops counts (sockets at or below the root, and packets without a socket).
// Locations past the table's 4,096 entries are counted in TCPStats.LocationOverflow.
func (p *TCPProbe) ReadDropLocations() (map[DropLocationKey]uint64, error) {
	out := map[DropLocationKey]uint64{}
	var k tcpDropLocationKey
	var perCPU []uint64
	it := p.objs.DropLocations.Iterate()
	for it.Next(&k, &perCPU) {
		var n uint64
		for _, v := range perCPU {
			n += v
		}
		out[DropLocationKey{Location: k.Location, Reason: k.Reason}] = n
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read drop locations: %w", err)
	}
	return out, nil
}

var kallsyms struct {
	once  sync.Once
	addrs []uint64
	names []string
}

// KernelFunction names the kernel function (or module function) containing addr, from
// /proc/kallsyms: "nf_hook_slow", "udp_queue_rcv_one_skb [mod]". Where the symbols cannot be
// read (kptr_restrict hides them from a process without CAP_SYSLOG) it is the address in hex.
func KernelFunction(addr uint64) string {
	kallsyms.once.Do(loadKallsyms)
	a := kallsyms.addrs
	i := sort.Search(len(a), func(i int) bool { return a[i] > addr }) - 1
	if i < 0 || addr == 0 {
		return "0x" + strconv.FormatUint(addr, 16)
	}
	return kallsyms.names[i]
}

func loadKallsyms() {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return
	}
	defer f.Close()
	type sym struct {
		addr uint64
		name string
	}
	var syms []sym
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || (fields[1] != "t" && fields[1] != "T") {
			continue
		}
		addr, err := strconv.ParseUint(fields[0], 16, 64)
		if err != nil || addr == 0 {
			continue // hidden addresses read as zeros
		}
		name := fields[2]
		if len(fields) > 3 {
			name += " " + fields[3]
		}
		syms = append(syms, sym{addr, name})
	}
	sort.Slice(syms, func(i, j int) bool { return syms[i].addr < syms[j].addr })
	for _, s := range syms {
		kallsyms.addrs = append(kallsyms.addrs, s.addr)
		kallsyms.names = append(kallsyms.names, s.name)
	}
}
