package bpf

import (
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/isoobs/isoobs/bench/emptyprobe"
)

// BenchmarkDNSRolesTestRun times each kind of packet the probe handles with
// BPF_PROG_TEST_RUN (hot caches, one CPU): what the programs compute, apart
// from the cache and TLB misses of a loaded node. The runner's cgroup owns a
// pod slot, its two names own name slots and its latency is sampled, as a
// busy pod's under load.
// ISOOBS_PROBE_OBJECT=path times that object instead of the embedded one.
// Metrics: <packet>-net-ns (probe minus an empty program) and mix-net-ns,
// the average over the dnsperf benchmark's mix (a query, a response, and
// both seen by the server; 2 of 8 responses NXDOMAIN).
func BenchmarkDNSRolesTestRun(b *testing.B) {
	l := newLab(b)
	root := l.cgroup("node")
	cg := l.cgroup("node/runner")
	// Latency sampled, as a busy pod's is (one query in 2^10 timed).
	opts := Options{CgroupRoot: root, LatencySampleAbove: 1}
	var p *DNSProbe
	var err error
	if path := os.Getenv("ISOOBS_PROBE_OBJECT"); path != "" {
		p, err = LoadDNSObject(path, opts)
	} else {
		p, err = LoadDNS(opts)
	}
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	empty, err := emptyprobe.Load()
	if err != nil {
		b.Fatal(err)
	}
	defer empty.Close()

	name := wireName("kubernetes", "default", "svc", "cluster", "local")
	nxName := wireName("nope", "tenant-jobs", "svc", "cluster", "local")
	answerA := []byte{0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 96, 0, 1}
	soa := make([]byte, 60) // an authority record's worth of bytes
	query := dnsQuery(name)
	nxQuery := dnsQuery(nxName)
	response := cat(dnsHeader(0x1234, 0x8180, 1), name, qtypeA_IN, answerA)
	nxResponse := cat(dnsHeader(0x1234, 0x8183, 1), nxName, qtypeA_IN, soa)
	type packet struct {
		label  string
		egress bool
		pkt    []byte
		weight float64 // in the dnsperf mix, per query
	}
	packets := []packet{
		{"client-query", true, ipv4Packet(protoUDP, udpSegment(40000, 53, query)), 1},
		{"client-response", false, ipv4Packet(protoUDP, udpSegment(53, 40000, response)), 6.0 / 8},
		{"client-nxdomain", false, ipv4Packet(protoUDP, udpSegment(53, 40000, nxResponse)), 2.0 / 8},
		{"server-query", false, ipv4Packet(protoUDP, udpSegment(40000, 53, query)), 1},
		{"server-response", true, ipv4Packet(protoUDP, udpSegment(53, 40000, response)), 1},
		{"not-dns", true, ipv4Packet(protoUDP, udpSegment(40000, 8080, query)), 0},
	}
	run := func(prog *ebpf.Program, pkt []byte, n int) float64 {
		var ns float64
		err := l.inCgroup(cg, l.clientNS, func() error {
			_, d, err := prog.Benchmark(pkt, n, nil)
			ns = float64(d.Nanoseconds())
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		return ns
	}
	// The pod and its names take their slots.
	nxQueryPkt := ipv4Packet(protoUDP, udpSegment(40000, 53, nxQuery))
	for i := 0; i < 3; i++ {
		time.Sleep(300 * time.Millisecond) // a rate needs 250 ms
		run(p.objs.DnsEgress, packets[0].pkt, 2)
		run(p.objs.DnsEgress, nxQueryPkt, 2)
		run(p.objs.DnsIngress, packets[2].pkt, 2)
		if _, err := p.ReadPods(); err != nil {
			b.Fatal(err)
		}
		if err := p.DrainNames(func(uint64, string, uint64, uint64) {}); err != nil {
			b.Fatal(err)
		}
	}
	if st, _ := p.Stats(); st.NameSlots.Entries < 2 || st.LatencySampledPods != 1 {
		// An object built without those parts (bench-probe-parts).
		b.Logf("%d names own a slot (want 2), %d pods sampled (want 1)", st.NameSlots.Entries, st.LatencySampledPods)
	}
	b.ResetTimer()
	var mix, weights float64
	for _, pk := range packets {
		prog, eprog := p.objs.DnsIngress, empty.Ingress()
		if pk.egress {
			prog, eprog = p.objs.DnsEgress, empty.Egress()
		}
		net := run(prog, pk.pkt, b.N) - run(eprog, pk.pkt, b.N)
		b.ReportMetric(net, pk.label+"-net-ns")
		mix += net * pk.weight
		weights += pk.weight
	}
	b.ReportMetric(mix/weights, "mix-net-ns")
}
