package bpf

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf"
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
	// Name new locations in one pass over /proc/kallsyms here, not one pass each when the
	// caller names them.
	addrs := make([]uint64, 0, len(out))
	for k := range out {
		addrs = append(addrs, k.Location)
	}
	KernelFunctions(addrs)
	return out, nil
}

// kernelFuncs caches the function names of the drop locations seen (a few dozen code sites in
// practice; the location table bounds them at 4,096). /proc/kallsyms itself is not kept: its
// ~120k text symbols would be ~6 MiB of the daemon's heap, and parsing it whole ~25 MiB of
// garbage, to name a handful of addresses.
var kernelFuncs struct {
	mu    sync.Mutex
	names map[uint64]string
}

// KernelFunction names the kernel function (or module function) containing addr, as
// /proc/kallsyms does: "nf_hook_slow", "udp_queue_rcv_one_skb [mod]". Where the symbols cannot
// be read (kptr_restrict hides them from a process without CAP_SYSLOG, and the kernel has no
// syscall programs) it is the address in hex.
func KernelFunction(addr uint64) string {
	return KernelFunctions([]uint64{addr})[addr]
}

// KernelFunctions names many addresses as KernelFunction does: those not named before by the
// kernel itself (ksym.c: the same names, microseconds each), or where it cannot (before Linux
// 5.14) in two passes over /proc/kallsyms for all of them.
func KernelFunctions(addrs []uint64) map[uint64]string {
	kernelFuncs.mu.Lock()
	defer kernelFuncs.mu.Unlock()
	if kernelFuncs.names == nil {
		kernelFuncs.names = map[uint64]string{}
	}
	out := make(map[uint64]string, len(addrs))
	var unknown []uint64
	for _, a := range addrs {
		if _, ok := kernelFuncs.names[a]; !ok && a != 0 {
			kernelFuncs.names[a] = "" // asked once per call; named below
			unknown = append(unknown, a)
		}
	}
	if len(unknown) > 0 {
		named, rest := nameInKernel(unknown)
		if len(rest) > 0 {
			maps.Copy(named, resolveKallsyms(rest))
		}
		for _, a := range unknown {
			n, ok := named[a]
			if !ok {
				// Kept too: an unreadable /proc/kallsyms is not read again for the same address.
				n = "0x" + strconv.FormatUint(a, 16)
			}
			kernelFuncs.names[a] = n
		}
	}
	for _, a := range addrs {
		n, ok := kernelFuncs.names[a]
		if !ok { // 0
			n = "0x0"
		}
		out[a] = n
	}
	return out
}

// kernelNamer is the loaded ksym.c program, or the error that kept it from loading (a kernel
// before 5.14 has no syscall programs): then addresses are named from /proc/kallsyms.
var kernelNamer struct {
	once sync.Once
	objs ksymObjects
	err  error
}

// nameInKernel names addrs with the kernel's own symbol lookup (ksym.c), ~10-25 µs of CPU an
// address; rest are those it could not name (no program: all of them).
func nameInKernel(addrs []uint64) (named map[uint64]string, rest []uint64) {
	kernelNamer.once.Do(func() {
		kernelNamer.err = loadKsymObjects(&kernelNamer.objs, nil)
	})
	named = map[uint64]string{}
	if kernelNamer.err != nil {
		return named, addrs
	}
	ctx := make([]byte, 8)
	var buf [unsafe.Sizeof(ksymKsymBuf{})]byte
	for _, a := range addrs {
		binary.LittleEndian.PutUint64(ctx, a)
		ret, err := kernelNamer.objs.NameAddress.Run(&ebpf.RunOptions{Context: ctx})
		if err == nil && ret == 0 {
			err = kernelNamer.objs.KsymName.Lookup(uint32(0), &buf)
		}
		n, _, _ := bytes.Cut(buf[:], []byte{0})
		if err != nil || ret != 0 || len(n) == 0 {
			rest = append(rest, a)
			continue
		}
		named[a] = string(n)
	}
	return named, rest
}

// resolveKallsyms names addrs in two passes over /proc/kallsyms: the first finds the text
// symbol at or below each address (only the addresses are kept, 8 bytes a symbol), the second
// reads those symbols' names. Addresses it cannot name are missing from the result.
func resolveKallsyms(addrs []uint64) map[uint64]string {
	var starts []uint64
	if eachTextSymbol(func(addr uint64, _ []byte, _ []byte) { starts = append(starts, addr) }) != nil || len(starts) == 0 {
		return nil
	}
	slices.Sort(starts)
	want := map[uint64][]uint64{} // symbol address -> the asked addresses inside it
	for _, a := range addrs {
		if i := sort.Search(len(starts), func(i int) bool { return starts[i] > a }) - 1; i >= 0 {
			want[starts[i]] = append(want[starts[i]], a)
		}
	}
	starts = nil
	out := map[uint64]string{}
	_ = eachTextSymbol(func(addr uint64, name, module []byte) {
		asked, ok := want[addr]
		if !ok {
			return
		}
		delete(want, addr) // the first name at an address, as the kernel's own lookup
		n := string(name)
		if len(module) > 0 {
			n += " " + string(module)
		}
		for _, a := range asked {
			out[a] = n
		}
	})
	return out
}

// eachTextSymbol calls fn for every text symbol of /proc/kallsyms with a readable address;
// name and module ("[nf_tables]", or empty) are only valid during the call.
func eachTextSymbol(fn func(addr uint64, name, module []byte)) error {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		// "ffffffff81000000 T _stext" or "ffffffffc0a01000 t nft_do_chain\t[nf_tables]"
		addrField, rest, ok := bytes.Cut(sc.Bytes(), []byte{' '})
		if !ok || len(rest) < 3 || (rest[0] != 't' && rest[0] != 'T') || rest[1] != ' ' {
			continue
		}
		addr, err := strconv.ParseUint(string(addrField), 16, 64) // no allocation: the compiler elides the conversion
		if err != nil || addr == 0 {
			continue // hidden addresses read as zeros
		}
		name, module, _ := bytes.Cut(rest[2:], []byte{'\t'})
		fn(addr, bytes.TrimSpace(name), bytes.TrimSpace(module))
	}
	return sc.Err()
}
