package bpf

import (
	"bufio"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/isoobs/isoobs/testlab/needroot"
)

// TestKernelFunctionsNameAddressesInside: an address inside a kernel function is named by that
// function, as /proc/kallsyms lists it, for every text symbol of a sample of the file checked
// against a full parse, by the kernel's own lookup and by the /proc/kallsyms passes alike;
// hidden or unknown addresses are hex.
func TestKernelFunctionsNameAddressesInside(t *testing.T) {
	needroot.Require(t, "/proc/kallsyms shows addresses to CAP_SYSLOG only")
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type sym struct {
		addr uint64
		name string
	}
	// The full parse the daemon no longer keeps: every text symbol, in file order.
	var all []sym
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 3 || (fl[1] != "t" && fl[1] != "T") {
			continue
		}
		a, err := strconv.ParseUint(fl[0], 16, 64)
		if err != nil || a == 0 {
			continue
		}
		n := fl[2]
		if len(fl) > 3 {
			n += " " + fl[3]
		}
		all = append(all, sym{a, n})
	}
	if len(all) < 1000 {
		t.Fatalf("only %d text symbols in /proc/kallsyms", len(all))
	}
	first := map[uint64]string{} // the first name at each address
	for _, s := range all {
		if _, ok := first[s.addr]; !ok {
			first[s.addr] = s.name
		}
	}
	// Every 97th address, when the next symbol starts 16 bytes or more above it: addr+8 is
	// inside its function.
	starts := slices.Sorted(maps.Keys(first))
	var ask []uint64
	want := map[uint64]string{}
	for i := 0; i+1 < len(starts); i += 97 {
		if a := starts[i]; starts[i+1] >= a+16 {
			ask = append(ask, a+8)
			want[a+8] = first[a]
		}
	}
	// Both ways of naming: the kernel's own lookup (ksym.c) and the two passes over
	// /proc/kallsyms (kernels before 5.14), and what the daemon calls.
	inKernel, rest := nameInKernel(ask)
	if len(rest) > 0 {
		t.Errorf("the kernel named %d of %d addresses (%v)", len(inKernel), len(ask), kernelNamer.err)
	}
	for name, got := range map[string]map[uint64]string{"kernel": inKernel, "kallsyms": resolveKallsyms(ask), "KernelFunctions": KernelFunctions(ask)} {
		bad := 0
		for _, a := range ask {
			if got[a] != want[a] {
				if bad++; bad <= 5 {
					t.Errorf("%s: %#x: got %q, want %q", name, a, got[a], want[a])
				}
			}
		}
		if bad > 0 {
			t.Errorf("%s: %d of %d addresses misnamed", name, bad, len(ask))
		}
	}
	if KernelFunction(0) != "0x0" || KernelFunction(1) != "0x1" {
		t.Errorf("addresses below every symbol: got %q, %q, want 0x0, 0x1", KernelFunction(0), KernelFunction(1))
	}
	t.Logf("%d addresses named against a full parse of %d text symbols", len(ask), len(all))
}

// BenchmarkDropLocationNaming is what the daemon pays when the kernel drops a packet at a code
// site it has not seen before (ReadDropLocations names every new location once, then keeps the
// name): per new address (inside the kernel text, 64 bytes apart, never named before), the
// process's CPU time (user + system, all threads: with /proc/kallsyms most of it is the kernel
// formatting the file) by the kernel's own lookup (ksym.c) and by the two /proc/kallsyms passes
// the daemon falls back to before Linux 5.14; each name is checked against the other's.
func BenchmarkDropLocationNaming(b *testing.B) {
	needroot.Require(b, "/proc/kallsyms shows addresses to CAP_SYSLOG only")
	var text uint64
	_ = eachTextSymbol(func(addr uint64, name, _ []byte) {
		if string(name) == "_stext" {
			text = addr
		}
	})
	if text == 0 {
		b.Skip("no _stext address in /proc/kallsyms")
	}
	next := text + 0x100000
	for _, bc := range []struct {
		name string
		fn   func([]uint64) map[uint64]string
		ref  func([]uint64) map[uint64]string
	}{
		{"kernel", func(a []uint64) map[uint64]string { named, _ := nameInKernel(a); return named }, resolveKallsyms},
		{"kallsyms", resolveKallsyms, func(a []uint64) map[uint64]string { named, _ := nameInKernel(a); return named }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			next += 64
			if got, want := bc.fn([]uint64{next})[next], bc.ref([]uint64{next})[next]; got != want || got == "" {
				b.Fatalf("%#x: %q, the other way %q", next, got, want)
			}
			b.ResetTimer()
			c0 := processCPU()
			for i := 0; i < b.N; i++ {
				next += 64
				bc.fn([]uint64{next})
			}
			b.ReportMetric(float64((processCPU()-c0).Nanoseconds())/1e3/float64(b.N), "cpu-µs/new-address")
		})
	}
}

// processCPU is this process's user + system CPU time so far, all threads.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
