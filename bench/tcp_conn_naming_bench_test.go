package bench

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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
	next := base + 0x100000 + uint64(time.Now().UnixNano()%(1<<20))*64
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
