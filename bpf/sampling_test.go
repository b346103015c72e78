package bpf

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

// inflightFingerprint mirrors the pending-query key hash in dns.c for UDP
// over IPv4: the client and server addresses as one little-endian word, then
// the ports, the DNS id and the protocol.
func inflightFingerprint(client, server netip.Addr, clientPort, serverPort, id uint16) uint64 {
	mix := func(h, w uint64) uint64 {
		h = (h ^ w) * 0x9e3779b97f4a7c15
		return h ^ (h >> 29)
	}
	c, s := client.As4(), server.As4()
	h := mix(0xcbf29ce484222325, uint64(binary.LittleEndian.Uint32(c[:]))|uint64(binary.LittleEndian.Uint32(s[:]))<<32)
	h = mix(h, uint64(clientPort)|uint64(serverPort)<<16|uint64(id)<<32|uint64(protoUDP)<<48)
	return h | 1
}

// A pod sampled 1 in 2^k has exactly the queries whose key hash has bits
// 54..54+k-1 clear timed (the Go mirror of the hash says which), each timed
// response weighing 2^k, while every query and response is still counted.
func TestDNSLatencySampledExactly(t *testing.T) {
	// TimeEveryQuery keeps ReadPods from changing the shift set below.
	r := newTestRunnerOpts(t, Options{TimeEveryQuery: true})
	query := func(id uint16) []byte {
		return ipv4Packet(protoUDP, udpSegment(40000, 53, cat(dnsHeader(id, 0x0100, 1), wireName("s"), qtypeA_IN)))
	}
	response := func(id uint16) []byte {
		p := ipv4Packet(protoUDP, udpSegment(53, 40000, cat(dnsHeader(id, 0x8180, 1), wireName("s"), qtypeA_IN)))
		ip := p[14:]
		copy(ip[12:16], serverV4.AsSlice())
		copy(ip[16:20], clientV4.AsSlice())
		return p
	}
	r.run(true, query(0)) // the pod gets its fast-path slot on this read
	r.run(false, response(0))
	slot := uint32(r.id) & uint32(len(r.p.slotOwner)-1)
	if r.p.slotOwner[slot] != r.id {
		t.Fatalf("pod has no fast-path slot")
	}

	for _, shift := range []uint32{3, 0, 1} {
		if err := r.p.objs.PodSlotOwner.Put(slot, dnsPodSlot{CgroupId: r.id, LatencySampleShift: shift}); err != nil {
			t.Fatal(err)
		}
		r.p.slotShift[slot] = shift
		before := r.snapshot()
		beforePods, _ := r.p.ReadPods()
		const n = 300
		var timed uint64
		for id := uint16(1); id <= n; id++ {
			if (inflightFingerprint(clientV4, serverV4, 40000, 53, id)>>54)&(1<<shift-1) == 0 {
				timed++
			}
			r.run(true, query(id))
			r.run(false, response(id))
		}
		after := r.snapshot()
		afterPods, _ := r.p.ReadPods()
		d := diff(before, after)
		inserted := after.stats.InflightInserted - before.stats.InflightInserted
		matched := after.stats.InflightMatched - before.stats.InflightMatched
		unmatched := after.stats.UnmatchedResponses - before.stats.UnmatchedResponses
		weight := sumBuckets(afterPods[r.id].LatencyLog2US) - sumBuckets(beforePods[r.id].LatencyLog2US)
		t.Logf("1 in 2^%d: %d of %d queries timed, histogram weight %d", shift, timed, n, weight)
		if d.pod.Queries != n || d.pod.Responses != n {
			t.Errorf("1 in 2^%d: counted %d queries, %d responses; want %d each", shift, d.pod.Queries, d.pod.Responses, n)
		}
		if inserted != timed || matched != timed || unmatched != 0 || weight != timed<<shift {
			t.Errorf("1 in 2^%d: timed %d, matched %d, unmatched %d, histogram weight %d; want %d, %d, 0, %d",
				shift, inserted, matched, unmatched, weight, timed, timed, timed<<shift)
		}
		if afterPods[r.id].LatencySampleShift != uint8(shift) {
			t.Errorf("PodCounters.LatencySampleShift = %d, want %d", afterPods[r.id].LatencySampleShift, shift)
		}
		// 1 in 8 of 300 is ~37: a hash that sampled nothing or everything
		// would pass the exact check above against a broken mirror.
		if lo, hi := uint64(n>>shift)/2, uint64(n>>shift)*2; timed < lo || timed > hi {
			t.Errorf("1 in 2^%d: %d of %d timed, outside [%d, %d]", shift, timed, n, lo, hi)
		}
	}
}

// ReadPods samples a pod's latency once its query rate is above
// Options.LatencySampleAbove and times every query again when it calms down.
func TestDNSLatencySampleShiftFollowsRate(t *testing.T) {
	// A short DNS timeout: the previous shift is forgotten soon enough for
	// the shift to come down at the next read.
	r := newTestRunnerOpts(t, Options{LatencySampleAbove: 50, DNSTimeout: 10 * time.Millisecond})
	query := ipv4Packet(protoUDP, udpSegment(40000, 53, cat(dnsHeader(9, 0x0100, 1), wireName("busy"), qtypeA_IN)))
	r.run(true, query) // slot assigned
	time.Sleep(latencyRateWindow)
	start := time.Now()
	for i := 0; i < 400; i++ { // each run reads the pods twice
		r.run(true, query)
	}
	time.Sleep(latencyRateWindow)
	pods, err := r.p.ReadPods()
	if err != nil {
		t.Fatal(err)
	}
	st, _ := r.p.Stats()
	shift := pods[r.id].LatencySampleShift
	t.Logf("400 queries in %v: sampled 1 in 2^%d", time.Since(start), shift)
	if shift == 0 || st.LatencySampledPods != 1 {
		t.Fatalf("after 400 queries within %v at most, latency sample shift %d, sampled pods %d; want > 0 and 1", time.Since(start), shift, st.LatencySampledPods)
	}
	time.Sleep(latencyRateWindow)
	if _, err := r.p.ReadPods(); err != nil { // no query in this window
		t.Fatal(err)
	}
	time.Sleep(latencyRateWindow)
	pods, _ = r.p.ReadPods()
	st, _ = r.p.Stats()
	if pods[r.id].LatencySampleShift != 0 || st.LatencySampledPods != 0 {
		t.Errorf("idle pod: latency sample shift %d, sampled pods %d; want 0 and 0", pods[r.id].LatencySampleShift, st.LatencySampledPods)
	}
}

func TestLatencySampleShift(t *testing.T) {
	for _, tc := range []struct {
		rate float64
		cur  uint32
		want uint32
	}{
		{0, 0, 0},
		{2000, 0, 0},  // at the limit: every query timed
		{2001, 0, 1},  // just above: 1 in 2
		{50000, 0, 5}, // 2000 x 2^5 = 64000 >= 50000 > 32000
		{50000, 5, 5}, // steady
		{60000, 3, 5}, // rises at once
		{30000, 5, 5}, // 937 timed/s at 1 in 32: above a quarter of 2000, kept
		{15000, 5, 3}, // 468 timed/s: below 500, comes down to what 15000 needs
		{0, 5, 0},     // idle
		{1e12, 0, 10}, // at most 1 in 1024
		{4000, 2, 2},  // 1000 timed/s at 1 in 4: kept (needs 1)
		{1900, 2, 0},  // 475 timed/s: below 500, every query timed again
	} {
		if got := latencySampleShift(tc.rate, 2000, tc.cur); got != tc.want {
			t.Errorf("rate %v, current 1 in 2^%d: got 1 in 2^%d, want 1 in 2^%d", tc.rate, tc.cur, got, tc.want)
		}
	}
}
