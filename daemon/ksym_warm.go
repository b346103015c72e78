package daemon

import (
	"bufio"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/isoobs/isoobs/bpf"
)

// warmKernelNaming loads, before the daemon serves, what names drop locations: the kernel's
// own symbol lookup (bpf/ksym.c, a syscall program bpf.KernelFunction loads on its first
// call). Left to the first new drop location, its load (~4-7 ms of CPU, measured) lands in
// whatever second that is; done here it is part of the start like the probes' own load, and
// its garbage goes with theirs (releaseLoadGarbage). It names the kernel's first text symbol
// (the first line of /proc/kallsyms: one line read, not a pass). Before Linux 5.14 there is no
// syscall program and naming is two /proc/kallsyms passes per batch: nothing to warm, and a
// pass for an address no drop has would be wasted, so it does nothing there; nor where
// /proc/kallsyms hides addresses.
func warmKernelNaming() {
	if !kernelAtLeast(5, 14) {
		return
	}
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return
	}
	line, err := bufio.NewReader(f).ReadString('\n')
	f.Close()
	if err != nil {
		return
	}
	addr, _, _ := strings.Cut(line, " ")
	if a, err := strconv.ParseUint(addr, 16, 64); err == nil && a != 0 {
		bpf.KernelFunction(a)
	}
}

// kernelAtLeast reports whether the running kernel's release is major.minor or later.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false
	}
	return releaseAtLeast(unix.ByteSliceToString(u.Release[:]), major, minor)
}

// releaseAtLeast compares a release string ("6.18.44-fc-v1252", "5.15.0-91-generic") with
// major.minor; an unparsable release is not.
func releaseAtLeast(release string, major, minor int) bool {
	maj, rest, _ := strings.Cut(release, ".")
	minor0 := rest
	if i := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minor0 = rest[:i]
	}
	M, err1 := strconv.Atoi(maj)
	m, err2 := strconv.Atoi(minor0)
	if err1 != nil || err2 != nil {
		return false
	}
	return M > major || (M == major && m >= minor)
}
