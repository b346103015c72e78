package bpf

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// queryTo is a client query from clientV4:40000 to server:53.
func queryTo(server netip.Addr, id uint16) []byte {
	p := ipv4Packet(protoUDP, udpSegment(40000, 53, cat(dnsHeader(id, 0x0100, 1), wireName("t", "example"), qtypeA_IN)))
	copy(p[14+16:14+20], server.AsSlice())
	return p
}

// answerFrom is server's answer to queryTo(server, id) with the given DNS flags.
func answerFrom(server netip.Addr, id, flags uint16) []byte {
	p := serverAnswer(id, flags)
	copy(p[14+12:14+16], server.AsSlice())
	return p
}

// onOneCPU runs the rest of the test on one CPU: the probe's per-server slots are per CPU,
// so which servers overflow them depends on the CPUs the packets ran on.
func onOneCPU(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	var one unix.CPUSet
	for cpu := 0; cpu < 1024; cpu++ {
		if set.IsSet(cpu) {
			one.Set(cpu)
			break
		}
	}
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.SchedSetaffinity(0, &set) })
}

// A pod's queries and answers are counted per server, exactly: answers by rcode, the timed
// ones, a forged answer kept out. Past the kernel's four servers (per CPU) the queries and
// answers are counted as other servers'.
func TestDNSServersPerPod(t *testing.T) {
	onOneCPU(t)
	r := newTestRunnerOpts(t, Options{TimeEveryQuery: true})
	a, b := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")
	for id := uint16(1); id <= 5; id++ {
		r.run(true, queryTo(a, id))
	}
	for id := uint16(11); id <= 13; id++ {
		r.run(true, queryTo(b, id))
	}
	for id, flags := range map[uint16]uint16{1: 0x8180, 2: 0x8180, 3: 0x8180, 4: 0x8183, 5: 0x8182, 11: 0x8180, 12: 0x8180} {
		if id >= 11 {
			r.run(false, answerFrom(b, id, flags))
		} else {
			r.run(false, answerFrom(a, id, flags))
		}
	}
	r.run(false, answerFrom(a, 99, 0x8183)) // forged: no query 99 pending
	pod := r.snapshot().pod
	want := []ServerCounters{
		{Server: netip.AddrPortFrom(a, 53), Queries: 5, Answers: 5, NXDomain: 1, ServFail: 1, Timed: 5},
		{Server: netip.AddrPortFrom(b, 53), Queries: 3, Answers: 2, Timed: 2},
	}
	if len(pod.Servers) != len(want) {
		t.Fatalf("servers %+v, want %+v", pod.Servers, want)
	}
	for i, w := range want {
		got := pod.Servers[i]
		got.LatencySumUS = 0 // microseconds of a test run, not compared
		if got != w {
			t.Errorf("server %d: %+v, want %+v", i, got, w)
		}
	}
	if pod.Unsolicited != 1 || pod.OtherServerQueries != 0 || pod.OtherServerAnswers != 0 {
		t.Errorf("unsolicited %d, other servers' queries %d and answers %d; want 1, 0, 0", pod.Unsolicited, pod.OtherServerQueries, pod.OtherServerAnswers)
	}

	// Four more servers: two fill the slots, the other two are "other".
	for i, s := range []string{"192.0.2.12", "192.0.2.13", "192.0.2.14", "192.0.2.15"} {
		r.run(true, queryTo(netip.MustParseAddr(s), uint16(20+i)))
	}
	r.run(false, answerFrom(netip.MustParseAddr("192.0.2.15"), 23, 0x8180))
	pod = r.snapshot().pod
	if len(pod.Servers) != 4 || pod.OtherServerQueries != 2 || pod.OtherServerAnswers != 1 {
		t.Errorf("after 6 servers: %d kept, other queries %d and answers %d; want 4, 2, 1", len(pod.Servers), pod.OtherServerQueries, pod.OtherServerAnswers)
	}
}

// A DNS server pod's responses are counted by rcode and timed from its query's arrival:
// exactly the answers that took 40 ms land at 2^15 µs (32.8 ms) or more; an unanswered
// query is timed never.
func TestDNSServerSideLatency(t *testing.T) {
	onOneCPU(t)
	r := newTestRunnerOpts(t, Options{TimeEveryQuery: true})
	serverQuery := func(id uint16) []byte { // clientV4:40000 -> serverV4:53, arriving at the server
		return ipv4Packet(protoUDP, udpSegment(40000, 53, cat(dnsHeader(id, 0x0100, 1), wireName("t", "example"), qtypeA_IN)))
	}
	for id := uint16(1); id <= 10; id++ {
		r.run(false, serverQuery(id))
	}
	for id := uint16(1); id <= 5; id++ {
		r.run(true, serverAnswer(id, 0x8180))
	}
	time.Sleep(40 * time.Millisecond) // the time is what is tested
	for id := uint16(6); id <= 9; id++ {
		flags := uint16(0x8180)
		if id == 9 {
			flags = 0x8182
		}
		r.run(true, serverAnswer(id, flags))
	}
	pod := r.snapshot().pod
	var timed, slow uint64
	for i, n := range pod.ServedLatencyLog2US {
		timed += n
		if i >= 15 {
			slow += n
		}
	}
	if pod.ServerQueries != 10 || pod.ServerResponses != 9 || pod.ServedRcode[RcodeNoError] != 8 || pod.ServedRcode[RcodeServFail] != 1 {
		t.Errorf("served %d queries, %d responses (%d NOERROR, %d SERVFAIL); want 10, 9 (8, 1)",
			pod.ServerQueries, pod.ServerResponses, pod.ServedRcode[RcodeNoError], pod.ServedRcode[RcodeServFail])
	}
	if timed != 9 || slow != 4 {
		t.Errorf("server-side latency: %d responses timed, %d at 32.8 ms or more; want 9, 4", timed, slow)
	}
	if pod.Queries != 0 || pod.Responses != 0 || len(pod.Servers) != 0 {
		t.Errorf("a server's messages counted as a client's: %d queries, %d responses, servers %v", pod.Queries, pod.Responses, pod.Servers)
	}
}
