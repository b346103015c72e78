package bpf

import (
	"bufio"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/isoobs/isoobs/testlab/needroot"
)

// TestKernelFunctionsNameAddressesInside: an address inside a kernel function is named by that
// function, as /proc/kallsyms lists it, for every text symbol of a sample of the file checked
// against a full parse; hidden or unknown addresses are hex.
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
	got := KernelFunctions(ask)
	for _, a := range ask {
		if got[a] != want[a] {
			t.Errorf("%#x: got %q, want %q", a, got[a], want[a])
		}
	}
	if KernelFunction(0) != "0x0" || KernelFunction(1) != "0x1" {
		t.Errorf("addresses below every symbol: got %q, %q, want 0x0, 0x1", KernelFunction(0), KernelFunction(1))
	}
	t.Logf("%d addresses named against a full parse of %d text symbols", len(ask), len(all))
}
