package bpf

import (
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLoadDNSWithoutCapabilities drops the BPF capabilities from this
// thread's effective set (kept in the permitted set, so they come back) and
// checks that the error names them instead of cilium/ebpf's MEMLOCK hint.
func TestLoadDNSWithoutCapabilities(t *testing.T) {
	l := newLab(t)
	root := l.cgroup("node")

	// Load once with the capabilities first: cilium/ebpf caches its kernel
	// feature probes, and probes run without them would cache "no global
	// functions" (BTF func linkage), after which every later load in this
	// process turns parse_message and hash_name into static functions: the
	// verifier then checks them once per path into them, a different (and,
	// for a probe reading the stack at variable offsets, a too large)
	// verification than production's.
	p, err := LoadDNS(Options{CgroupRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()

	runtime.LockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var saved [2]unix.CapUserData
	if err := unix.Capget(&hdr, &saved[0]); err != nil {
		t.Fatal(err)
	}
	dropped := saved
	for _, c := range []int{unix.CAP_BPF, unix.CAP_PERFMON, unix.CAP_NET_ADMIN, unix.CAP_SYS_ADMIN} {
		dropped[c/32].Effective &^= 1 << (uint(c) % 32)
	}
	if err := unix.Capset(&hdr, &dropped[0]); err != nil {
		t.Fatal(err)
	}
	p, err = LoadDNS(Options{CgroupRoot: root})
	if rerr := unix.Capset(&hdr, &saved[0]); rerr != nil {
		// Leave the thread locked: the runtime discards it with the goroutine.
		t.Fatalf("restore capabilities: %v", rerr)
	}
	runtime.UnlockOSThread()

	if err == nil {
		p.Close()
		t.Fatal("LoadDNS succeeded without CAP_BPF/CAP_SYS_ADMIN")
	}
	msg := err.Error()
	for _, want := range []string{"permission denied", "missing CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if strings.Contains(msg, "MEMLOCK") {
		t.Errorf("error %q still carries the misleading MEMLOCK hint", msg)
	}
	t.Log(msg)
}
