package daemon

import (
	"unsafe"

	"github.com/isoobs/isoobs/bpf"
)

// numQTypeSlots: one slot per bpf.TrackedQTypes entry plus "other".
const numQTypeSlots = len(bpf.TrackedQTypes) + 1

// counters are DNS counters of one cgroup or pod, in fixed arrays so summing and subtracting
// them allocates nothing.
type counters struct {
	Queries, Responses, Malformed  uint64
	BytesOut, BytesIn              uint64
	ServerQueries, ServerResponses uint64
	TCPQueries                     uint64
	Timeouts, Evicted, Unsolicited uint64
	// PolicyDenied are DNS queries Hubble reports denied by policy (0 in the probe's counters).
	PolicyDenied  uint64
	Rcode         [bpf.NumRcodeSlots]uint64
	QType         [numQTypeSlots]uint64
	LatencyLog2US [bpf.NumLatencyBuckets]uint64
	// Queries and answers of servers the kernel could not keep apart (see bpf.PodCounters).
	OtherServerQueries, OtherServerAnswers uint64
	// A DNS server pod's responses by rcode and its server-side latency.
	ServedRcode         [bpf.NumRcodeSlots]uint64
	ServedLatencyLog2US [bpf.NumLatencyBuckets]uint64
}

func qtypeSlot(t uint16) int {
	for i, q := range bpf.TrackedQTypes {
		if q == t {
			return i
		}
	}
	return numQTypeSlots - 1
}

// qtypeNames labels the slots in rows (queries_by_type).
var qtypeNames = func() [numQTypeSlots]string {
	names := map[uint16]string{1: "A", 28: "AAAA", 5: "CNAME", 12: "PTR", 33: "SRV", 65: "HTTPS", 16: "TXT", 15: "MX", 2: "NS", 6: "SOA", 255: "ANY"}
	var out [numQTypeSlots]string
	for i, q := range bpf.TrackedQTypes {
		out[i] = names[q]
		if out[i] == "" {
			out[i] = "TYPE" + itoa(uint64(q))
		}
	}
	out[numQTypeSlots-1] = "OTHER"
	return out
}()

func itoa(v uint64) string {
	if v == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for v > 0 {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[i:])
}

func fromBPF(p *bpf.PodCounters) counters {
	c := counters{
		Queries: p.Queries, Responses: p.Responses, Malformed: p.Malformed,
		BytesOut: p.BytesOut, BytesIn: p.BytesIn,
		ServerQueries: p.ServerQueries, ServerResponses: p.ServerResponses, TCPQueries: p.TCPQueries,
		Timeouts: p.Timeouts, Evicted: p.Evicted, Unsolicited: p.Unsolicited,
		Rcode: p.Rcode, LatencyLog2US: p.LatencyLog2US,
		OtherServerQueries: p.OtherServerQueries, OtherServerAnswers: p.OtherServerAnswers,
		ServedRcode: p.ServedRcode, ServedLatencyLog2US: p.ServedLatencyLog2US,
	}
	for t, n := range p.QType {
		c.QType[qtypeSlot(t)] += n
	}
	return c
}

// counters holds only uint64 fields, so it is also a flat array of words: add, sub and delta
// run over that array (no per-field code to forget when a field is added, and fast enough for
// thousands of pods per tick).
const counterWords = int(unsafe.Sizeof(counters{}) / 8)

// Fails to compile if a non-uint64 field makes the size not a whole number of words.
var _ [unsafe.Sizeof(counters{}) % 8]struct{} = [0]struct{}{}

func (c *counters) words() *[counterWords]uint64 { return (*[counterWords]uint64)(unsafe.Pointer(c)) }

func (c *counters) add(o *counters) {
	a, b := c.words(), o.words()
	for i := range a {
		a[i] += b[i]
	}
}

// sub subtracts o, flooring at zero (a baseline taken from a since-replaced kernel entry may
// exceed the current value).
func (c *counters) sub(o *counters) {
	a, b := c.words(), o.words()
	for i := range a {
		if a[i] >= b[i] {
			a[i] -= b[i]
		} else {
			a[i] = 0
		}
	}
}

// deltaSince returns what happened between prev and cur, two cumulative reads of one kernel
// entry. A field going backwards means the kernel entry was deleted and created again, so
// cur itself is the delta.
func deltaSince(cur, prev *counters) counters {
	d := *cur
	a, b := d.words(), prev.words()
	for i := range a {
		if a[i] < b[i] {
			return *cur
		}
		a[i] -= b[i]
	}
	return d
}

// Rate fields kept per tick in the window series.
const (
	rQueries = iota
	rResponses
	rNoError
	rNXDomain
	rServFail
	rRefused
	rOtherRcode
	rMalformed
	rServed
	rServedResponses
	rPolicyDenied
	rTimeouts
	numRateFields
)

type rateSample [numRateFields]uint64

func (c *counters) rateSample() rateSample {
	return rateSample{
		rQueries: c.Queries, rResponses: c.Responses,
		rNoError:    c.Rcode[bpf.RcodeNoError],
		rNXDomain:   c.Rcode[bpf.RcodeNXDomain],
		rServFail:   c.Rcode[bpf.RcodeServFail],
		rRefused:    c.Rcode[bpf.RcodeRefused],
		rOtherRcode: c.Rcode[bpf.RcodeOther],
		rMalformed:  c.Malformed,
		rServed:     c.ServerQueries, rServedResponses: c.ServerResponses,
		rPolicyDenied: c.PolicyDenied,
		rTimeouts:     c.Timeouts,
	}
}

func (r *rateSample) sub(o *rateSample) {
	for i := range r {
		if r[i] >= o[i] {
			r[i] -= o[i]
		} else {
			r[i] = 0
		}
	}
}

func (r *rateSample) add(o *rateSample) {
	for i := range r {
		r[i] += o[i]
	}
}
