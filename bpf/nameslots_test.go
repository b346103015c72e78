package bpf

import (
	"fmt"
	"testing"
	"time"
)

// A name drained twice or more in an interval gets a hot slot in the array
// the programs will use after the next swap; from then on it is counted there,
// not in the name table, exactly; an idle owner gives the slot back.
func TestDNSNameSlots(t *testing.T) {
	r := newTestRunnerOpts(t, Options{NoEarlyDrain: true})
	query := func(name string) []byte {
		return ipv4Packet(protoUDP, udpSegment(40000, 53, cat(dnsHeader(1, 0x0100, 1), wireName(name, "example"), qtypeA_IN)))
	}
	nxdomain := func(name string) []byte {
		p := ipv4Packet(protoUDP, udpSegment(53, 40000, cat(dnsHeader(1, 0x8183, 1), wireName(name, "example"), qtypeA_IN)))
		ip := p[14:]
		copy(ip[12:16], serverV4.AsSlice())
		copy(ip[16:20], clientV4.AsSlice())
		return p
	}
	send := func(pkt []byte, egress bool, n int) {
		for i := 0; i < n; i++ {
			r.run(egress, pkt)
		}
	}
	drain := func(step string, want map[string][2]uint64) {
		t.Helper()
		got := drainAll(t, r.p)[r.id]
		if want == nil { // not checked
			return
		}
		if len(got) != len(want) {
			t.Errorf("%s: drained %v, want %v", step, got, want)
		}
		for name, w := range want {
			if got[name] != w {
				t.Errorf("%s: %s counted %v, want %v", step, name, got[name], w)
			}
		}
	}
	slotsInUse := func() uint32 {
		st, err := r.p.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return st.NameSlots.Entries
	}

	// A random-subdomain flood's names: each queried once, answered NXDOMAIN.
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("r%d", i)
		send(query(name), true, 1)
		send(nxdomain(name), false, 1)
	}
	drain("flood", nil)
	drain("after the flood", map[string][2]uint64{})
	if n := slotsInUse(); n != 0 {
		t.Errorf("a flood of names seen once took %d slots, want 0", n)
	}

	send(query("hot"), true, 5)
	send(query("cold"), true, 1)
	drain("first interval", map[string][2]uint64{"hot.example": {5, 0}, "cold.example": {1, 0}})
	if n := slotsInUse(); n != 0 {
		t.Errorf("after the first drain %d slots in use, want 0 (owners take effect at the next swap)", n)
	}
	send(query("hot"), true, 3)
	drain("second interval", map[string][2]uint64{"hot.example": {3, 0}})
	if n := slotsInUse(); n != 1 {
		t.Fatalf("after the second drain %d slots in use, want 1 (hot.example)", n)
	}

	// Two answered, two pending (one query key: a second answer to one
	// query would be unsolicited).
	for i := 0; i < 2; i++ {
		send(query("hot"), true, 1)
		send(nxdomain("hot"), false, 1)
	}
	send(query("hot"), true, 2)
	send(query("cold"), true, 1)
	if _, _, _, ok := r.activeName("hot.example"); ok {
		t.Error("hot.example is in the name table, want it counted in its slot only")
	}
	if _, _, _, ok := r.activeName("cold.example"); !ok {
		t.Error("cold.example is not in the name table")
	}
	drain("on the hot slot", map[string][2]uint64{"hot.example": {4, 2}, "cold.example": {1, 0}})

	for i := 0; i < idleDrains+2; i++ {
		drain("idle", map[string][2]uint64{})
	}
	if n := slotsInUse(); n != 0 {
		t.Errorf("after %d idle drains %d slots in use, want 0", idleDrains+2, n)
	}
	send(query("hot"), true, 1)
	if _, _, _, ok := r.activeName("hot.example"); !ok {
		t.Error("hot.example, idle and dropped from its slot, is not counted in the name table")
	}
	drain("after the slot is gone", map[string][2]uint64{"hot.example": {1, 0}})
}

// The name slots are per CPU: a node with many CPUs gets fewer of them, so
// the copies stay within maxNameSlotCopies per array.
func TestDefaultNameSlots(t *testing.T) {
	for cpus, want := range map[int]uint32{1: 1024, 2: 1024, 64: 1024, 65: 512, 128: 512, 192: 256, 1024: 64, 4096: 64} {
		if got := defaultNameSlots(cpus); got != want {
			t.Errorf("defaultNameSlots(%d) = %d, want %d", cpus, got, want)
		}
	}
}

// The insert counter is read every 25 ms while names come in fast enough to
// fill an eighth of the table within 100 ms, else every 100 ms.
// Early drains stop holding names at a byte bound too: long names fill memory long before
// their count reaches the entry bound.
func TestPendingFullBoundsBytes(t *testing.T) {
	p := &DNSProbe{opts: Options{MaxNames: DefaultMaxNames}}
	const longName = 255
	for !p.pendingFull() {
		p.pending = append(p.pending, pendingName{off: uint32(len(p.pendingWire)), n: longName})
		p.pendingWire = append(p.pendingWire, make([]byte, longName)...)
	}
	if n := len(p.pending); n != (maxPendingWireBytes+longName-1)/longName || len(p.pendingWire) > maxPendingWireBytes+longName {
		t.Fatalf("full at %d names, %d bytes: want the %d-byte bound (%d names), not the entry bound (%d)",
			n, len(p.pendingWire), maxPendingWireBytes, (maxPendingWireBytes+longName-1)/longName, maxPendingFactor*DefaultMaxNames)
	}
}

func TestEarlyDrainInterval(t *testing.T) {
	for _, tc := range []struct {
		n       uint64
		elapsed time.Duration
		want    time.Duration
	}{
		{0, earlyDrainIdle, earlyDrainIdle},
		{2047, earlyDrainIdle, earlyDrainIdle},  // 20.5k/s: just under an eighth of 16,384 per 100 ms
		{2048, earlyDrainIdle, earlyDrainEvery}, // 20.5k/s
		{512, earlyDrainEvery, earlyDrainEvery}, // 20.5k/s measured over 25 ms
		{511, earlyDrainEvery, earlyDrainIdle},
		{100, 0, earlyDrainIdle}, // no time elapsed: no rate
	} {
		if got := earlyDrainInterval(tc.n, tc.elapsed, 16384); got != tc.want {
			t.Errorf("earlyDrainInterval(%d, %v) = %v, want %v", tc.n, tc.elapsed, got, tc.want)
		}
	}
}
