package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/isoobs/isoobs/cgroupv2"
	"github.com/isoobs/isoobs/dnsname"
)

// Packets driven straight into the programs with BPF_PROG_TEST_RUN. The
// kernel wants an Ethernet header in front; the program sees the IP packet.
// The pseudo socket of a test run belongs to the caller's cgroup.

const (
	ethIPv4  = 0x0800
	ethIPv6  = 0x86dd
	protoTCP = 6
	protoUDP = 17
)

func ethFrame(etherType uint16, ip []byte) []byte {
	f := make([]byte, 14, 14+len(ip))
	binary.BigEndian.PutUint16(f[12:], etherType)
	return append(f, ip...)
}

func ipv4Packet(proto byte, l4 []byte) []byte {
	return ipv4PacketOpts(proto, l4, nil, 0)
}

func ipv4PacketOpts(proto byte, l4, options []byte, fragOff uint16) []byte {
	hl := 20 + len(options)
	p := make([]byte, hl, hl+len(l4))
	p[0] = 0x40 | byte(hl/4)
	binary.BigEndian.PutUint16(p[2:], uint16(hl+len(l4)))
	binary.BigEndian.PutUint16(p[6:], fragOff)
	p[8] = 64
	p[9] = proto
	copy(p[12:], clientV4.AsSlice())
	copy(p[16:], serverV4.AsSlice())
	copy(p[20:], options)
	return ethFrame(ethIPv4, append(p, l4...))
}

func ipv6Packet(next byte, ext, l4 []byte) []byte {
	p := make([]byte, 40, 40+len(ext)+len(l4))
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(len(ext)+len(l4)))
	p[6] = next
	p[7] = 64
	copy(p[8:], clientV6.AsSlice())
	copy(p[24:], serverV6.AsSlice())
	p = append(p, ext...)
	return ethFrame(ethIPv6, append(p, l4...))
}

func udpSegment(sport, dport uint16, payload []byte) []byte {
	s := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(s[0:], sport)
	binary.BigEndian.PutUint16(s[2:], dport)
	binary.BigEndian.PutUint16(s[4:], uint16(8+len(payload)))
	return append(s, payload...)
}

func tcpSegment(sport, dport uint16, payload []byte) []byte {
	s := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(s[0:], sport)
	binary.BigEndian.PutUint16(s[2:], dport)
	s[12] = 5 << 4
	s[13] = 0x18 // PSH|ACK
	return append(s, payload...)
}

func dnsHeader(id, flags, qdcount uint16) []byte {
	h := make([]byte, 12)
	binary.BigEndian.PutUint16(h[0:], id)
	binary.BigEndian.PutUint16(h[2:], flags)
	binary.BigEndian.PutUint16(h[4:], qdcount)
	return h
}

func wireName(labels ...string) []byte {
	var b []byte
	for _, l := range labels {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	return append(b, 0)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var qtypeA_IN = []byte{0, 1, 0, 1}

func dnsQuery(name []byte) []byte { return cat(dnsHeader(0x1234, 0x0100, 1), name, qtypeA_IN) }

// refQuestion is the Go reference of what the kernel parser accepts: the
// lower-cased dotted first question name, or an error for a malformed
// message. It states the rules: header of 12 bytes, the QR bit matching the
// direction, at least one question, labels <= 63 without compression,
// name <= 255 bytes, qtype and qclass present.
func refQuestion(msg []byte, response bool) (string, error) {
	if len(msg) < 12 {
		return "", errors.New("truncated header")
	}
	if (msg[2]&0x80 != 0) != response {
		return "", errors.New("QR bit does not match the direction")
	}
	if binary.BigEndian.Uint16(msg[4:]) == 0 {
		return "", errors.New("zero questions")
	}
	q := msg[12:]
	var labels []string
	pos := 0
	for {
		if pos >= len(q) {
			return "", errors.New("truncated name")
		}
		n := int(q[pos])
		pos++
		if n == 0 {
			break
		}
		if n > 63 {
			return "", errors.New("label > 63 or compression pointer")
		}
		if pos+n > len(q) {
			return "", errors.New("truncated label")
		}
		labels = append(labels, string(dnsname.AppendLabel(nil, q[pos:pos+n]))) // as the daemon shows it
		pos += n
	}
	if pos > 255 {
		return "", errors.New("name > 255 bytes")
	}
	if pos+4 > len(q) {
		return "", errors.New("truncated qtype/qclass")
	}
	if len(labels) == 0 {
		return ".", nil
	}
	return strings.Join(labels, "."), nil
}

// testRunner drives packets into a loaded probe and reports what changed.
type testRunner struct {
	t   testing.TB
	p   *DNSProbe
	lab *lab
	cg  string
	id  uint64
	// The programs run: the DNS probe's, or with Options.Chained the TCP probe's, which
	// tail-call them.
	egress, ingress *ebpf.Program
}

func newTestRunner(t testing.TB) *testRunner { return newTestRunnerOpts(t, Options{}) }

func newTestRunnerOpts(t testing.TB, opts Options) *testRunner {
	l := newLab(t)
	root := l.cgroup("node")
	cg := l.cgroup("node/runner")
	opts.CgroupRoot = root
	p, err := LoadDNS(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	id, _ := cgroupv2.ID(cg)
	r := &testRunner{t: t, p: p, lab: l, cg: cg, id: id, egress: p.objs.DnsEgress, ingress: p.objs.DnsIngress}
	if opts.Chained {
		tp, err := LoadTCP(TCPOptions{CgroupRoot: root, DNS: p})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tp.Close() })
		r.egress, r.ingress = tp.objs.TcpEgress, tp.objs.TcpIngress
	}
	return r
}

type delta struct {
	pod   PodCounters
	stats ProbeStats
}

// run sends pkt through the egress or ingress program from the runner's
// cgroup and returns the change of that cgroup's counters and of the stats.
func (r *testRunner) run(egress bool, pkt []byte) delta {
	r.t.Helper()
	before := r.snapshot()
	prog := r.ingress
	if egress {
		prog = r.egress
	}
	var ret uint32
	err := r.lab.inCgroup(r.cg, r.lab.clientNS, func() error {
		var err error
		ret, err = prog.Run(&ebpf.RunOptions{Data: pkt})
		return err
	})
	if err != nil {
		r.t.Fatalf("test run: %v", err)
	}
	if ret != 1 {
		r.t.Fatalf("program returned %d, want 1 (pass)", ret)
	}
	after := r.snapshot()
	return diff(before, after)
}

func (r *testRunner) snapshot() delta {
	pods, err := r.p.ReadPods()
	if err != nil {
		r.t.Fatal(err)
	}
	st, err := r.p.Stats()
	if err != nil {
		r.t.Fatal(err)
	}
	return delta{pods[r.id], st}
}

func diff(a, b delta) delta {
	var d delta
	d.pod.Queries = b.pod.Queries - a.pod.Queries
	d.pod.Responses = b.pod.Responses - a.pod.Responses
	d.pod.Malformed = b.pod.Malformed - a.pod.Malformed
	d.pod.ServerQueries = b.pod.ServerQueries - a.pod.ServerQueries
	d.pod.ServerResponses = b.pod.ServerResponses - a.pod.ServerResponses
	d.pod.BytesOut = b.pod.BytesOut - a.pod.BytesOut
	d.pod.BytesIn = b.pod.BytesIn - a.pod.BytesIn
	d.pod.Timeouts = b.pod.Timeouts - a.pod.Timeouts
	d.pod.Evicted = b.pod.Evicted - a.pod.Evicted
	d.pod.Unsolicited = b.pod.Unsolicited - a.pod.Unsolicited
	for i := range d.pod.Rcode {
		d.pod.Rcode[i] = b.pod.Rcode[i] - a.pod.Rcode[i]
	}
	d.stats.Malformed = b.stats.Malformed - a.stats.Malformed
	d.stats.NotParsed = b.stats.NotParsed - a.stats.NotParsed
	d.stats.DNSMessages = b.stats.DNSMessages - a.stats.DNSMessages
	return d
}

// activeName looks the name up in the table the programs write.
func (r *testRunner) activeName(name string) (queries, nxdomain uint64, text string, ok bool) {
	return r.activeWire(textToWire(name))
}

// activeWire looks a wire-format name up in the table the programs write.
func (r *testRunner) activeWire(wire []byte) (queries, nxdomain uint64, text string, ok bool) {
	r.p.mu.Lock()
	table := r.p.nameTables[r.p.active]
	r.p.mu.Unlock()
	var v dnsNameValue
	if err := table.Lookup(dnsNameKey{CgroupId: r.id, NameHash: wireHash(wire)}, &v); err != nil {
		return 0, 0, "", false
	}
	return v.Queries, v.Nxdomain, nameText(&v), true
}

// wireHash mirrors hash_name in dns.c: 8-byte little-endian words
// of the wire name (the last one zero-padded), A-Z lower-cased.
func wireHash(wire []byte) uint64 {
	h := uint64(0xcbf29ce484222325)
	for off := 0; off < len(wire); off += 8 {
		var word [8]byte
		copy(word[:], wire[off:])
		for i, c := range word {
			if c >= 'A' && c <= 'Z' {
				word[i] = c + 'a' - 'A'
			}
		}
		h = (h ^ binary.LittleEndian.Uint64(word[:])) * 0x9e3779b97f4a7c15
		h ^= h >> 29
	}
	return h
}

// textToWire encodes a name in presentation format, as refQuestion returns it.
func textToWire(name string) []byte {
	wire, err := dnsname.Wire(name)
	if err != nil {
		panic(err)
	}
	return wire
}

// TestDNSParserTable runs each packet through the DNS programs, attached alone and run by the
// TCP programs (a tail call on every packet that may carry DNS): the counts are the same.
func TestDNSParserTable(t *testing.T) {
	for _, chained := range []bool{false, true} {
		t.Run(map[bool]string{false: "alone", true: "after TCP"}[chained], func(t *testing.T) {
			testDNSParserTable(t, newTestRunnerOpts(t, Options{Chained: chained}))
		})
	}
}

func testDNSParserTable(t *testing.T, r *testRunner) {
	long63 := strings.Repeat("a", 63)
	type want struct {
		queries, responses, malformed, serverQueries, notParsed, unsolicited uint64
		name                                                                 string // a name that must be counted
	}
	hopByHop := []byte{protoUDP, 0, 1, 4, 0, 0, 0, 0} // next=UDP, 8 bytes, PadN
	fragHdr := []byte{protoUDP, 0, 0, 0, 0, 0, 0, 1}
	for _, tc := range []struct {
		name   string
		egress bool
		pkt    []byte
		want   want
	}{
		{"valid query", true, ipv4Packet(protoUDP, udpSegment(40000, 53, dnsQuery(wireName("Www", "Example", "COM")))),
			want{queries: 1, name: "www.example.com"}},
		// No query is pending: the answer is unsolicited, its rcode and name
		// are not counted.
		{"NXDOMAIN response nobody asked for", false, ipv4Packet(protoUDP, udpSegment(53, 40000, cat(dnsHeader(7, 0x8183, 1), wireName("nx", "example"), qtypeA_IN))),
			want{unsolicited: 1}},
		{"query received by a server", false, ipv4Packet(protoUDP, udpSegment(40000, 53, dnsQuery(wireName("x")))),
			want{serverQueries: 1}},
		{"root name", true, ipv4Packet(protoUDP, udpSegment(40000, 53, dnsQuery(wireName()))), want{queries: 1, name: "."}},
		{"name of exactly 255 bytes", true, ipv4Packet(protoUDP, udpSegment(40000, 53, dnsQuery(wireName(long63, long63, long63, strings.Repeat("b", 61))))),
			want{queries: 1, name: long63 + "." + long63 + "." + long63 + "." + strings.Repeat("b", 61)}},
		{"IPv4 options", true, ipv4PacketOpts(protoUDP, udpSegment(40000, 53, dnsQuery(wireName("opt"))), []byte{1, 1, 1, 1}, 0), want{queries: 1, name: "opt"}},
		{"IPv6 query", true, ipv6Packet(protoUDP, nil, udpSegment(40000, 53, dnsQuery(wireName("six")))), want{queries: 1, name: "six"}},
		{"IPv6 hop-by-hop header", true, ipv6Packet(0, hopByHop, udpSegment(40000, 53, dnsQuery(wireName("hop")))), want{queries: 1, name: "hop"}},
		{"TCP query", true, ipv4Packet(protoTCP, tcpSegment(40000, 53, tcpFrame(dnsQuery(wireName("tcp"))))), want{queries: 1, name: "tcp"}},

		{"truncated DNS header", true, ipv4Packet(protoUDP, udpSegment(40000, 53, []byte{1, 2, 3, 4, 5})), want{malformed: 1}},
		{"empty UDP payload", true, ipv4Packet(protoUDP, udpSegment(40000, 53, nil)), want{malformed: 1}},
		{"label longer than 63", true, ipv4Packet(protoUDP, udpSegment(40000, 53, dnsQuery(wireName(strings.Repeat("x", 64))))), want{malformed: 1}},
		{"name longer than 255", true, ipv4Packet(protoUDP, udpSegment(40000, 53, dnsQuery(wireName(long63, long63, long63, long63)))), want{malformed: 1}},
		{"compression pointer as name", true, ipv4Packet(protoUDP, udpSegment(40000, 53, cat(dnsHeader(1, 0x0100, 1), []byte{0xc0, 0x0c}, qtypeA_IN))), want{malformed: 1}},
		{"compression pointer loop", true, ipv4Packet(protoUDP, udpSegment(40000, 53, cat(dnsHeader(1, 0x0100, 1), []byte{3, 'w', 'w', 'w', 0xc0, 0x0c}, qtypeA_IN))), want{malformed: 1}},
		{"reserved label type", true, ipv4Packet(protoUDP, udpSegment(40000, 53, cat(dnsHeader(1, 0x0100, 1), []byte{0x40, 'a', 0}, qtypeA_IN))), want{malformed: 1}},
		{"zero questions", true, ipv4Packet(protoUDP, udpSegment(40000, 53, cat(dnsHeader(1, 0x0100, 0), wireName("a"), qtypeA_IN))), want{malformed: 1}},
		{"label past the end", true, ipv4Packet(protoUDP, udpSegment(40000, 53, cat(dnsHeader(1, 0x0100, 1), []byte{10, 'a', 'b'}))), want{malformed: 1}},
		{"no qtype", true, ipv4Packet(protoUDP, udpSegment(40000, 53, cat(dnsHeader(1, 0x0100, 1), wireName("a"), []byte{0, 1}))), want{malformed: 1}},
		{"response on the query path", true, ipv4Packet(protoUDP, udpSegment(40000, 53, cat(dnsHeader(1, 0x8180, 1), wireName("a"), qtypeA_IN))), want{malformed: 1}},
		{"HTTP on port 53", true, ipv4Packet(protoUDP, udpSegment(40000, 53, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))), want{malformed: 1}},
		{"binary junk on port 53", false, ipv4Packet(protoUDP, udpSegment(53, 40000, bytes.Repeat([]byte{0xff}, 40))), want{malformed: 1}},
		{"TCP 1-byte segment", true, ipv4Packet(protoTCP, tcpSegment(40000, 53, []byte{0})), want{malformed: 1}},
		{"TCP length prefix below header size", true, ipv4Packet(protoTCP, tcpSegment(40000, 53, cat([]byte{0, 5}, dnsQuery(wireName("a"))))), want{malformed: 1}},
		{"TCP continuation segment (not covered)", true, ipv4Packet(protoTCP, tcpSegment(40000, 53, []byte("continuation of a long message"))), want{malformed: 1}},

		// The server side checks the header only (the names are counted on
		// the client side).
		{"server: label longer than 63 counted from its header", false, ipv4Packet(protoUDP, udpSegment(40000, 53, dnsQuery(wireName(strings.Repeat("x", 64))))),
			want{serverQueries: 1}},
		{"server: truncated DNS header", false, ipv4Packet(protoUDP, udpSegment(40000, 53, []byte{1, 2, 3, 4, 5})), want{malformed: 1}},
		{"server: header without room for a question", false, ipv4Packet(protoUDP, udpSegment(40000, 53, cat(dnsHeader(1, 0x0100, 1), []byte{0, 0, 1}))), want{malformed: 1}},
		{"server: response arriving on port 53", false, ipv4Packet(protoUDP, udpSegment(40000, 53, cat(dnsHeader(1, 0x8180, 1), wireName("a"), qtypeA_IN))), want{malformed: 1}},
		{"server: zero questions", false, ipv4Packet(protoUDP, udpSegment(40000, 53, cat(dnsHeader(1, 0x0100, 0), wireName("a"), qtypeA_IN))), want{malformed: 1}},
		{"server: query sent from port 53", true, ipv4Packet(protoUDP, udpSegment(53, 40000, dnsQuery(wireName("a")))), want{malformed: 1}},
		{"server: TCP query", false, ipv4Packet(protoTCP, tcpSegment(40000, 53, tcpFrame(dnsQuery(wireName("tcp"))))), want{serverQueries: 1}},

		{"TCP pure ACK", true, ipv4Packet(protoTCP, tcpSegment(40000, 53, nil)), want{}},
		{"TCP on other ports", true, ipv4Packet(protoTCP, tcpSegment(40000, 80, tcpFrame(dnsQuery(wireName("http"))))), want{}},
		{"IPv6 TCP query", true, ipv6Packet(protoTCP, nil, tcpSegment(40000, 53, tcpFrame(dnsQuery(wireName("tcp6"))))), want{queries: 1, name: "tcp6"}},
		{"IPv6 hop-by-hop header before TCP", true, ipv6Packet(0, []byte{protoTCP, 0, 1, 4, 0, 0, 0, 0}, tcpSegment(40000, 53, tcpFrame(dnsQuery(wireName("hoptcp"))))),
			want{queries: 1, name: "hoptcp"}},
		{"IPv4 non-first fragment of TCP", true, ipv4PacketOpts(protoTCP, tcpSegment(40000, 80, tcpFrame(dnsQuery(wireName("frag")))), nil, 100), want{notParsed: 1}},
		{"IPv4 header length past the end", true, ipv4PacketOpts(protoUDP, nil, []byte{1, 1, 1, 1}, 0)[:14+22], want{}},
		{"truncated UDP header", true, ipv4Packet(protoUDP, []byte{0x9c, 0x40, 0, 53}), want{}},
		{"not port 53", true, ipv4Packet(protoUDP, udpSegment(40000, 5353, dnsQuery(wireName("mdns")))), want{}},
		{"IPv4 non-first fragment", true, ipv4PacketOpts(protoUDP, udpSegment(40000, 53, dnsQuery(wireName("frag"))), nil, 100), want{notParsed: 1}},
		{"IPv6 fragment header", true, ipv6Packet(44, fragHdr, udpSegment(40000, 53, dnsQuery(wireName("frag")))), want{notParsed: 1}},
		{"IPv6 extension header past the end", true, ipv6Packet(0, nil, nil), want{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.t = t
			d := r.run(tc.egress, tc.pkt)
			got := want{d.pod.Queries, d.pod.Responses, d.pod.Malformed, d.pod.ServerQueries, d.stats.NotParsed, d.pod.Unsolicited, tc.want.name}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if d.stats.Malformed != tc.want.malformed {
				t.Errorf("global malformed counter moved by %d, want %d", d.stats.Malformed, tc.want.malformed)
			}
			if tc.want.name != "" {
				if q, _, text, ok := r.activeName(tc.want.name); !ok || q == 0 || text != tc.want.name {
					t.Errorf("name %q: counted=%v queries=%d text=%q", tc.want.name, ok, q, text)
				}
			}
			counted := d.pod.Queries + d.pod.Responses + d.pod.ServerQueries + d.pod.ServerResponses + d.pod.Malformed + d.pod.Unsolicited
			if counted != d.stats.DNSMessages {
				t.Errorf("%d messages examined but %d counted", d.stats.DNSMessages, counted)
			}
			if counted > 0 {
				ipLen := uint64(len(tc.pkt) - 14)
				if d.pod.BytesOut+d.pod.BytesIn != ipLen {
					t.Errorf("bytes out+in %d, want the IP length %d", d.pod.BytesOut+d.pod.BytesIn, ipLen)
				}
			}
		})
	}
}

// The kernel refuses to run a program on an IP header shorter than its
// minimum (the stack drops such packets before any cgroup hook), so these
// only check that the test run is refused and nothing is counted.
func TestDNSParserTruncatedIPHeaders(t *testing.T) {
	r := newTestRunner(t)
	for name, pkt := range map[string][]byte{
		"IPv4": ethFrame(ethIPv4, []byte{0x45, 0, 0, 10, 0, 0, 0, 0, 64, protoUDP}),
		"IPv6": ethFrame(ethIPv6, []byte{0x60, 0, 0, 0, 0, 8, protoUDP, 64}),
	} {
		before := r.snapshot()
		_, err := r.p.objs.DnsEgress.Run(&ebpf.RunOptions{Data: pkt})
		if !errors.Is(err, unix.EINVAL) {
			t.Errorf("%s: test run = %v, want EINVAL from the kernel", name, err)
		}
		if d := diff(before, r.snapshot()); d.stats.DNSMessages != 0 || d.stats.NotParsed != 0 {
			t.Errorf("%s: counted %+v", name, d)
		}
	}
}

// FuzzDNSParser compares the kernel parser with refQuestion on arbitrary
// UDP payloads sent to port 53: exactly one of query/malformed is counted,
// and a parsed name is counted under the same text and hash as Go computes.
func FuzzDNSParser(f *testing.F) {
	long63 := strings.Repeat("a", 63)
	for _, seed := range [][]byte{
		dnsQuery(wireName("www", "example", "com")),
		dnsQuery(wireName("MiXeD", "Case")),
		dnsQuery(wireName()),
		dnsQuery(wireName(long63, long63, long63, strings.Repeat("b", 61))),
		dnsQuery(wireName(long63, long63, long63, long63)),
		dnsQuery(wireName(strings.Repeat("x", 64))),
		cat(dnsHeader(1, 0x0100, 1), []byte{0xc0, 0x0c}, qtypeA_IN),
		cat(dnsHeader(1, 0x0100, 1), []byte{3, 'w', 'w', 'w', 0xc0, 0x0c}, qtypeA_IN),
		cat(dnsHeader(1, 0x0100, 0), wireName("a"), qtypeA_IN),
		cat(dnsHeader(1, 0x8180, 1), wireName("a"), qtypeA_IN),
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{1, 2, 3},
		{},
	} {
		f.Add(seed)
	}
	r := newTestRunner(f)
	runs := 0
	f.Fuzz(func(t *testing.T, payload []byte) {
		if len(payload) > 1400 {
			return
		}
		r.t = t
		if runs++; runs%4096 == 0 { // keep the name table from filling up
			if err := r.p.DrainNames(func(uint64, string, uint64, uint64) {}); err != nil {
				t.Fatal(err)
			}
		}
		d := r.run(true, ipv4Packet(protoUDP, udpSegment(40000, 53, payload)))
		name, err := refQuestion(payload, false)
		if err != nil {
			if d.pod.Malformed != 1 || d.pod.Queries != 0 {
				t.Fatalf("reference says %v; kernel counted %d queries, %d malformed", err, d.pod.Queries, d.pod.Malformed)
			}
			return
		}
		if d.pod.Queries != 1 || d.pod.Malformed != 0 {
			t.Fatalf("reference parsed %q; kernel counted %d queries, %d malformed", name, d.pod.Queries, d.pod.Malformed)
		}
		// Look up by the wire bytes, not by re-encoding the text: a label may
		// hold a '.' (the text is then ambiguous, the wire name is not).
		wire := payload[12:]
		for pos := 0; ; pos += int(wire[pos]) + 1 {
			if wire[pos] == 0 {
				wire = wire[:pos+1]
				break
			}
		}
		if _, _, text, ok := r.activeWire(wire); !ok || text != name {
			t.Fatalf("name %q not counted under its hash (found=%v, text %q)", name, ok, text)
		}
	})
}

// With a one-set inflight table (4 ways) every query shares the set: a fifth
// pending query evicts the oldest (charged to its pod), whose answer is then
// counted but not timed; a second answer to it is unsolicited.
func TestDNSInflightEviction(t *testing.T) {
	r := newTestRunnerOpts(t, Options{MaxInflight: 1}) // rounded up to one set
	query := func(id uint16) []byte {
		return ipv4Packet(protoUDP, udpSegment(40000, 53, cat(dnsHeader(id, 0x0100, 1), wireName("a"), qtypeA_IN)))
	}
	response := func(id uint16) []byte {
		p := ipv4Packet(protoUDP, udpSegment(53, 40000, cat(dnsHeader(id, 0x8180, 1), wireName("a"), qtypeA_IN)))
		ip := p[14:] // the response travels server -> client
		copy(ip[12:16], serverV4.AsSlice())
		copy(ip[16:20], clientV4.AsSlice())
		return p
	}
	r.run(true, query(1))
	r.run(true, query(1)) // retransmit: duplicate, keeps the first send time
	for id := uint16(2); id <= 5; id++ {
		r.run(true, query(id)) // the fifth evicts the oldest, id 1
	}
	r.run(false, response(1))
	r.run(false, response(2))
	r.run(false, response(1)) // the evicted query's fingerprint was used up
	st, err := r.p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	got := [6]uint64{st.InflightInserted, st.InflightDuplicates, st.InflightEvicted, st.EvictedAnswers, st.UnmatchedResponses, st.InflightMatched}
	if want := [6]uint64{5, 1, 1, 1, 1, 1}; got != want || st.Inflight.Max != 4 || st.Inflight.Entries != 3 {
		t.Errorf("inserted, duplicates, evicted, evicted answers, unmatched, matched = %v, want %v; fill %+v", got, want, st.Inflight)
	}
	pods, _ := r.p.ReadPods()
	pod := pods[r.id]
	if n := sumBuckets(pod.LatencyLog2US); n != 1 {
		t.Errorf("%d latency samples, want 1", n)
	}
	if pod.Responses != 2 || pod.Evicted != 1 || pod.Unsolicited != 1 || pod.Timeouts != 0 {
		t.Errorf("pod: responses %d, evicted %d, unsolicited %d, timeouts %d; want 2, 1, 1, 0", pod.Responses, pod.Evicted, pod.Unsolicited, pod.Timeouts)
	}
}

// Pods move from pod_stats to a fast-path slot on the first ReadPods, give it
// up on DeletePods and get it back later; with one slot, a second pod stays
// in pod_stats. Every count is kept through each move.
func TestDNSPodSlots(t *testing.T) {
	r := newTestRunnerOpts(t, Options{PodSlots: 1})
	other := r.lab.cgroup("node/other")
	otherID, err := cgroupv2.ID(other)
	if err != nil {
		t.Fatal(err)
	}
	query := ipv4Packet(protoUDP, udpSegment(40000, 53, dnsQuery(wireName("slot"))))
	send := func(cg string, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			err := r.lab.inCgroup(cg, r.lab.clientNS, func() error {
				_, err := r.p.objs.DnsEgress.Run(&ebpf.RunOptions{Data: query})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func(step string, wantRunner, wantOther uint64, slotOwner uint64) {
		t.Helper()
		pods, err := r.p.ReadPods()
		if err != nil {
			t.Fatal(err)
		}
		if pods[r.id].Queries != wantRunner || pods[otherID].Queries != wantOther {
			t.Errorf("%s: queries runner %d other %d, want %d and %d", step, pods[r.id].Queries, pods[otherID].Queries, wantRunner, wantOther)
		}
		var owner dnsPodSlot
		if err := r.p.objs.PodSlotOwner.Lookup(uint32(0), &owner); err != nil {
			t.Fatal(err)
		}
		if owner.CgroupId != slotOwner || owner.LatencySampleShift != 0 {
			t.Errorf("%s: slot owned by cgroup %d (latency sampled 1 in 2^%d), want %d (every query timed)", step, owner.CgroupId, owner.LatencySampleShift, slotOwner)
		}
	}
	send(r.cg, 3) // pod_stats only
	check("first read", 3, 0, r.id)
	send(r.cg, 4)  // the slot
	send(other, 5) // pod_stats: the one slot is taken
	check("both", 7, 5, r.id)
	if err := r.p.DeletePods([]uint64{r.id}); err != nil {
		t.Fatal(err)
	}
	send(other, 1)
	check("runner deleted", 0, 6, otherID) // the freed slot is zeroed and handed to other
	send(other, 2)
	send(r.cg, 1) // back in pod_stats, from 0
	check("runner back", 1, 8, otherID)
	var slot []dnsPodCounters
	if err := r.p.objs.PodSlotCounters.Lookup(uint32(0), &slot); err != nil {
		t.Fatal(err)
	}
	if got := sumPodCounters(slot).Queries; got != 2 {
		t.Errorf("slot counters hold %d queries, want 2 (other's since it got the slot)", got)
	}
}
