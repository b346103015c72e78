package bpf

import (
	"testing"
	"time"
)

func clientQuery(id uint16) []byte {
	return ipv4Packet(protoUDP, udpSegment(40000, 53, cat(dnsHeader(id, 0x0100, 1), wireName("t", "example"), qtypeA_IN)))
}

// serverAnswer is the answer to clientQuery(id) with the given DNS flags
// (0x8180 NOERROR, 0x8183 NXDOMAIN), travelling server -> client.
func serverAnswer(id, flags uint16) []byte {
	p := ipv4Packet(protoUDP, udpSegment(53, 40000, cat(dnsHeader(id, flags, 1), wireName("t", "example"), qtypeA_IN)))
	ip := p[14:]
	copy(ip[12:16], serverV4.AsSlice())
	copy(ip[16:20], clientV4.AsSlice())
	return p
}

// A query without its answer within DNSTimeout is a timeout of its pod,
// counted once: while it waits in the table (ReadPods), when its late answer
// comes, and when its way is reused. The late answer itself is counted.
func TestDNSTimeoutsCountedOnce(t *testing.T) {
	const timeout = 50 * time.Millisecond
	r := newTestRunnerOpts(t, Options{MaxInflight: 1, DNSTimeout: timeout, TimeEveryQuery: true}) // one set of 4 ways
	for id := uint16(1); id <= 3; id++ {
		r.run(true, clientQuery(id))
	}
	r.run(false, serverAnswer(1, 0x8180))
	time.Sleep(timeout + 10*time.Millisecond) // the time is what is tested
	pods := func() PodCounters {
		t.Helper()
		pods, err := r.p.ReadPods()
		if err != nil {
			t.Fatal(err)
		}
		return pods[r.id]
	}
	if got := pods(); got.Timeouts != 2 || got.Responses != 1 {
		t.Fatalf("queries 2 and 3 waiting past the timeout: timeouts %d, responses %d; want 2, 1", got.Timeouts, got.Responses)
	}

	r.run(false, serverAnswer(2, 0x8183)) // late: the kernel counts it, the table no longer holds it
	if got := pods(); got.Timeouts != 2 || got.Responses != 2 || got.Rcode[RcodeNXDomain] != 1 || got.Unsolicited != 0 {
		t.Errorf("after the late answer: timeouts %d, responses %d, NXDOMAIN %d, unsolicited %d; want 2, 2, 1, 0",
			got.Timeouts, got.Responses, got.Rcode[RcodeNXDomain], got.Unsolicited)
	}
	// Three free ways, then query 3's expired way is reused by the fourth
	// query: the kernel counts it now.
	for id := uint16(10); id <= 13; id++ {
		r.run(true, clientQuery(id))
	}
	st, err := r.p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if got := pods(); got.Timeouts != 2 || got.Evicted != 0 || st.InflightExpired != 1 || st.LateAnswers != 1 {
		t.Errorf("after reusing the expired way: timeouts %d, evicted %d, node expired %d, late %d; want 2, 0, 1, 1",
			got.Timeouts, got.Evicted, st.InflightExpired, st.LateAnswers)
	}
	r.run(true, clientQuery(14)) // the set is full of young queries: 10 is evicted
	if got := pods(); got.Timeouts != 2 || got.Evicted != 1 {
		t.Errorf("after an eviction: timeouts %d, evicted %d; want 2, 1", got.Timeouts, got.Evicted)
	}
}

// Forged answers (no query pending) are unsolicited and leave the rcode and
// name counts alone; for a pod timed 1 in 2^k exactly those in the timed
// subset can be checked. Answers to queries sent before the pod's shift came
// down are not called unsolicited while the kernel keeps the previous shift.
func TestDNSUnsolicitedAnswersWithSampling(t *testing.T) {
	r := newTestRunnerOpts(t, Options{TimeEveryQuery: true})
	r.run(true, clientQuery(0)) // the pod gets its fast-path slot on this read
	r.run(false, serverAnswer(0, 0x8180))
	slot := uint32(r.id) & uint32(len(r.p.slotOwner)-1)
	if r.p.slotOwner[slot] != r.id {
		t.Fatalf("pod has no fast-path slot")
	}
	setShift := func(shift, prev uint32) {
		t.Helper()
		if err := r.p.objs.PodSlotOwner.Put(slot, dnsPodSlot{CgroupId: r.id, LatencySampleShift: shift, PrevSampleShift: prev}); err != nil {
			t.Fatal(err)
		}
		r.p.slotShift[slot], r.p.slotPrevShift[slot], r.p.slotShiftAt[slot] = shift, prev, time.Now()
	}
	timed := func(id uint16, shift uint32) bool {
		return (inflightFingerprint(clientV4, serverV4, 40000, 53, id)>>54)&(1<<shift-1) == 0
	}
	const n = 300
	for _, shift := range []uint32{0, 3} {
		setShift(shift, shift)
		before := r.snapshot()
		var checked uint64
		for id := uint16(1000); id < 1000+n; id++ {
			if timed(id, shift) {
				checked++
			}
			r.run(false, serverAnswer(id, 0x8183))
		}
		d := diff(before, r.snapshot())
		t.Logf("1 in 2^%d: %d of %d forged answers checkable", shift, checked, n)
		if d.pod.Unsolicited != checked || d.pod.Responses != n-checked || d.pod.Rcode[RcodeNXDomain] != n-checked {
			t.Errorf("1 in 2^%d: unsolicited %d, responses %d, NXDOMAIN %d; want %d, %d, %d",
				shift, d.pod.Unsolicited, d.pod.Responses, d.pod.Rcode[RcodeNXDomain], checked, n-checked, n-checked)
		}
	}

	// Queries sent while timed 1 in 8, answered after the shift came down to 0.
	setShift(3, 3)
	for id := uint16(1); id <= n; id++ {
		r.run(true, clientQuery(id))
	}
	setShift(0, 3)
	before := r.snapshot()
	for id := uint16(1); id <= n; id++ {
		r.run(false, serverAnswer(id, 0x8180))
	}
	d := diff(before, r.snapshot())
	if d.pod.Unsolicited != 0 || d.pod.Responses != n {
		t.Errorf("answers to queries sent before the shift came down: unsolicited %d, responses %d; want 0, %d", d.pod.Unsolicited, d.pod.Responses, n)
	}
}
