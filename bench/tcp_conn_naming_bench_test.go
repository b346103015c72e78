package bench

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/isoobs/isoobs/bpf"
)

// BenchmarkDropLocationNaming is what BenchmarkDaemonTCPConnRate's idle step pays when the
// kernel drops a packet at a code site the daemon has not seen before: the daemon names every
// new drop location (bpf.KernelFunctions, from ReadDropLocations each tick) with two passes over
// /proc/kallsyms, then keeps the name. Each op names one address never named before (inside
// the kernel text, 64 bytes apart); the CPU is this process's (user + system, all threads:
// most of it is the kernel formatting /proc/kallsyms). cpu-ms/known is one more call for an
// address already named (the cache). Needs readable kallsyms addresses (root).
func BenchmarkDropLocationNaming(b *testing.B) {
	base := kallsymsText(b)
	// Fresh addresses every run of this function (the cache is per process).
	next := base + 0x100000 + uint64(time.Now().UnixNano()%(1<<12))*64
	if n := bpf.KernelFunction(next); strings.HasPrefix(n, "0x") {
		b.Skipf("kallsyms does not name %#x (%s): needs CAP_SYSLOG", next, n)
	}
	b.ResetTimer()
	c0 := processCPU()
	for i := 0; i < b.N; i++ {
		next += 64
		bpf.KernelFunctions([]uint64{next})
	}
	cpu := processCPU() - c0
	b.StopTimer()
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/new")
	c1 := processCPU()
	for range 1000 {
		bpf.KernelFunctions([]uint64{next})
	}
	b.ReportMetric(float64((processCPU()-c1).Microseconds())/1000/1000, "cpu-ms/known")
}

// BenchmarkDropLocationNamingInKernel measures an alternative to the /proc/kallsyms passes, not
// used by the daemon: the kernel names the address itself (bpf_snprintf "%ps", its own kallsyms
// lookup) in a BPF_PROG_TYPE_SYSCALL program run once per address with BPF_PROG_TEST_RUN, the
// name read back from a one-entry array map. Needs Linux 5.14 (syscall programs; bpf_snprintf is
// 5.13), so a daemon using it would keep the passes for older kernels. Each op names one address
// not named before and checks the name against bpf.KernelFunction.
func BenchmarkDropLocationNamingInKernel(b *testing.B) {
	base := kallsymsText(b)
	fmtMap, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1, Flags: unix.BPF_F_RDONLY_PROG,
		Contents: []ebpf.MapKV{{Key: uint32(0), Value: []byte("%ps\x00\x00\x00\x00\x00")}}})
	if err != nil {
		b.Skip(err)
	}
	defer fmtMap.Close()
	if err := fmtMap.Freeze(); err != nil {
		b.Fatal(err)
	}
	out, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 128, MaxEntries: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Syscall, Flags: unix.BPF_F_SLEEPABLE, License: "GPL", Instructions: asm.Instructions{
		asm.LoadMem(asm.R6, asm.R1, 0, asm.DWord), // the address, from the context
		asm.StoreMem(asm.RFP, -8, asm.R6, asm.DWord),
		asm.StoreImm(asm.RFP, -16, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, out.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -16),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "exit"),
		asm.Mov.Reg(asm.R1, asm.R0), // out value
		asm.Mov.Imm(asm.R2, 128),
		asm.LoadMapValue(asm.R3, fmtMap.FD(), 0), // "%ps"
		asm.Mov.Reg(asm.R4, asm.RFP),
		asm.Add.Imm(asm.R4, -8),
		asm.Mov.Imm(asm.R5, 8),
		asm.FnSnprintf.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
		asm.Return(),
	}})
	if err != nil {
		b.Skipf("syscall program with bpf_snprintf: %v (Linux 5.14+)", err)
	}
	defer prog.Close()
	ctx, v := make([]byte, 8), make([]byte, 128)
	name := func(a uint64) string {
		binary.LittleEndian.PutUint64(ctx, a)
		if _, err := prog.Run(&ebpf.RunOptions{Context: ctx}); err != nil {
			b.Fatal(err)
		}
		if err := out.Lookup(uint32(0), &v); err != nil {
			b.Fatal(err)
		}
		n, _, _ := bytes.Cut(v, []byte{0})
		return string(n)
	}
	next := base + 0x200000 + uint64(time.Now().UnixNano()%(1<<12))*64
	if got, want := name(next), bpf.KernelFunction(next); got != want {
		b.Fatalf("%#x: the kernel names it %q, /proc/kallsyms %q", next, got, want)
	}
	b.ResetTimer()
	c0 := processCPU()
	for i := 0; i < b.N; i++ {
		next += 64
		name(next)
	}
	b.ReportMetric(float64((processCPU()-c0).Nanoseconds())/1e6/float64(b.N), "cpu-ms/new")
}

// kallsymsText is the address of _stext from /proc/kallsyms.
func kallsymsText(b *testing.B) uint64 {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		b.Skip(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		addr, name, ok := strings.Cut(sc.Text(), " ")
		if ok && strings.HasSuffix(name, " _stext") {
			a, err := strconv.ParseUint(addr, 16, 64)
			if err != nil || a == 0 {
				b.Skip("kallsyms addresses are hidden (kptr_restrict): needs root")
			}
			return a
		}
	}
	b.Skip("no _stext in /proc/kallsyms")
	return 0
}

// processCPU is this process's user + system CPU time so far, all threads.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
