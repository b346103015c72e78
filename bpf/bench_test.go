package bpf

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"
)

// progRun is a program's cumulative BPF stats (kernel.bpf_stats_enabled).
type progRun struct {
	runtime time.Duration
	count   uint64
}

func readProgRun(b *testing.B, progs ...*ebpf.Program) progRun {
	var r progRun
	for _, p := range progs {
		st, err := p.Stats()
		if err != nil {
			b.Fatal(err)
		}
		r.runtime += st.Runtime
		r.count += st.RunCount
	}
	return r
}

func (r progRun) sub(o progRun) progRun { return progRun{r.runtime - o.runtime, r.count - o.count} }
func (r progRun) nsPerRun() float64     { return float64(r.runtime.Nanoseconds()) / float64(r.count) }

// BenchmarkDNSProbeCostPerPacket measures the probe's in-kernel cost per
// packet on real traffic through a veth: run_time_ns/run_cnt of the DNS
// programs minus that of empty cgroup_skb programs attached to the same
// cgroup in the same run (which carries the hook and the stats overhead).
// Metrics: probe-ns/pkt, empty-ns/pkt and net-ns/pkt (the probe's own work).
func BenchmarkDNSProbeCostPerPacket(b *testing.B) {
	l := newLab(b)
	root := l.cgroup("node")
	pod := l.cgroup("node/pod")
	l.startServer(l.cgroup("server")) // outside the root: only the client side is measured
	echo := startUDPEcho(b, l, l.cgroup("server"))

	p, err := LoadDNS(Options{CgroupRoot: root})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	var empty baselineObjects
	if err := loadBaselineObjects(&empty, nil); err != nil {
		b.Fatal(err)
	}
	defer empty.Close()
	for _, a := range []struct {
		prog *ebpf.Program
		typ  ebpf.AttachType
	}{{empty.EmptyEgress, ebpf.AttachCGroupInetEgress}, {empty.EmptyIngress, ebpf.AttachCGroupInetIngress}} {
		lk, err := link.AttachCgroup(link.CgroupOptions{Path: root, Attach: a.typ, Program: a.prog})
		if err != nil {
			b.Fatal(err)
		}
		defer lk.Close()
	}
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()

	for _, tc := range []struct {
		name     string
		tcp, v6  bool
		nonDNS   bool
		nameFunc func(i int) string
	}{
		{name: "udp4-query+response", nameFunc: func(i int) string { return fmt.Sprintf("svc-%d.ns.svc.cluster.local.", i%64) }},
		{name: "udp6-query+response", v6: true, nameFunc: func(i int) string { return fmt.Sprintf("svc-%d.ns.svc.cluster.local.", i%64) }},
		{name: "tcp4-query+response", tcp: true, nameFunc: func(i int) string { return fmt.Sprintf("svc-%d.ns.svc.cluster.local.", i%64) }},
		{name: "udp4-unique-names", nameFunc: func(i int) string { return fmt.Sprintf("u%d.crawler.example.com.", i) }},
		{name: "udp4-not-dns", nonDNS: true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var send func(i int) error
			if tc.nonDNS {
				c := dialEcho(b, l, pod, echo)
				buf := make([]byte, 64)
				send = func(int) error {
					if _, err := c.Write(buf[:40]); err != nil {
						return err
					}
					_, err := c.Read(buf)
					return err
				}
			} else {
				c := l.dial(pod, tc.tcp, tc.v6)
				send = func(i int) error {
					_, _, err := c.query(tc.nameFunc(i), dnsmessage.TypeA)
					return err
				}
			}
			// Keep the name table from filling during long runs.
			defer p.DrainNames(func(uint64, string, uint64, uint64) {})
			dns0 := readProgRun(b, p.objs.DnsEgress, p.objs.DnsIngress)
			empty0 := readProgRun(b, empty.EmptyEgress, empty.EmptyIngress)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := send(i); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			dns := readProgRun(b, p.objs.DnsEgress, p.objs.DnsIngress).sub(dns0)
			emp := readProgRun(b, empty.EmptyEgress, empty.EmptyIngress).sub(empty0)
			if dns.count != emp.count || dns.count < uint64(b.N) {
				b.Fatalf("probe ran %d times, empty program %d times, for %d round trips", dns.count, emp.count, b.N)
			}
			b.ReportMetric(dns.nsPerRun(), "probe-ns/pkt")
			b.ReportMetric(emp.nsPerRun(), "empty-ns/pkt")
			b.ReportMetric(dns.nsPerRun()-emp.nsPerRun(), "net-ns/pkt")
		})
	}
}

// BenchmarkDNSParserTestRun is the parser alone through BPF_PROG_TEST_RUN
// (no socket, no veth): a quick, low-noise comparison of code changes.
func BenchmarkDNSParserTestRun(b *testing.B) {
	r := newTestRunner(b)
	var empty baselineObjects
	if err := loadBaselineObjects(&empty, nil); err != nil {
		b.Fatal(err)
	}
	defer empty.Close()
	pkt := ipv4Packet(protoUDP, udpSegment(40000, 53, dnsQuery(wireName("svc-1", "ns", "svc", "cluster", "local"))))
	var dnsNS, emptyNS float64
	err := r.lab.inCgroup(r.cg, r.lab.clientNS, func() error {
		_, d1, err := r.p.objs.DnsEgress.Benchmark(pkt, b.N, nil)
		if err != nil {
			return err
		}
		_, d2, err := empty.EmptyEgress.Benchmark(pkt, b.N, nil)
		dnsNS, emptyNS = float64(d1.Nanoseconds()), float64(d2.Nanoseconds())
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(dnsNS, "probe-ns/pkt")
	b.ReportMetric(emptyNS, "empty-ns/pkt")
	b.ReportMetric(dnsNS-emptyNS, "net-ns/pkt")
}

func startUDPEcho(b *testing.B, l *lab, cgroupDir string) netip.AddrPort {
	addr := netip.AddrPortFrom(serverV4, 5300)
	var pc net.PacketConn
	err := l.inCgroup(cgroupDir, l.serverNS, func() error {
		var err error
		pc, err = net.ListenPacket("udp", addr.String())
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	return addr
}

func dialEcho(b *testing.B, l *lab, cgroupDir string, addr netip.AddrPort) net.Conn {
	var c net.Conn
	err := l.inCgroup(cgroupDir, l.clientNS, func() error {
		var err error
		c, err = net.Dial("udp", addr.String())
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	return c
}
