package bpf

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"github.com/isoobs/isoobs/bench/emptyprobe"
	"github.com/isoobs/isoobs/bpf/runstats"
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

// probeBeforeObject is the probe object as it was before the per-server
// counts (commit a047f7e: no server slots in the pod counters, a server pod's
// responses neither timed nor counted by rcode). Earlier it was the object
// before answers were checked against the pending queries (5db99c5), and
// before that the one before the per-packet cost work (367ac05). The
// cost benchmark runs it alternately with the current object so the two
// figures come from one run on one machine.
const probeBeforeObject = "testdata/dns_before_bpfel.o"

// BenchmarkDNSProbeCostPerPacket measures the probe's in-kernel cost per
// packet on real traffic through a veth: run_time_ns/run_cnt of the DNS
// programs minus that of empty cgroup_skb programs attached to the same
// cgroup in the same run (which carries the hook and the stats overhead).
// The current probe and the earlier one (probeBeforeObject) are attached
// alternately, blocks of round trips each, so both see the same load.
// Metrics: net-ns/pkt (current probe's own work), before-net-ns/pkt,
// empty-ns/pkt, and for the realistic mix "mix1%-net-ns/pkt": a node's
// packets are mostly not DNS, so the per-packet cost over all packets is
// 0.99 x the non-DNS figure + 0.01 x the DNS one (reported on udp4 rows,
// with the non-DNS figure of the udp4-not-dns row measured first).
func BenchmarkDNSProbeCostPerPacket(b *testing.B) {
	l := newLab(b)
	root := l.cgroup("node")
	pod := l.cgroup("node/pod")
	l.startServer(l.cgroup("server")) // outside the root: only the client side is measured
	echo := startUDPEcho(b, l, l.cgroup("server"))

	beforeSpec := func() *ebpf.CollectionSpec {
		spec, err := ebpf.LoadCollectionSpec(probeBeforeObject)
		if err != nil {
			b.Fatal(err)
		}
		// Maps added since then are created unused so the objects struct fills.
		cur, err := loadDns()
		if err != nil {
			b.Fatal(err)
		}
		for name, m := range cur.Maps {
			if _, ok := spec.Maps[name]; !ok {
				spec.Maps[name] = m
			}
		}
		return spec
	}
	load := func(before bool) *DNSProbe {
		var p *DNSProbe
		var err error
		if before {
			p, err = loadDNSSpec(beforeSpec(), Options{CgroupRoot: root, MaxPods: DefaultMaxPods, MaxNames: DefaultMaxNames, MaxInflight: DefaultMaxInflight})
		} else {
			p, err = LoadDNS(Options{CgroupRoot: root})
		}
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	// The daemon reads the maps every second: pods then have a fast-path
	// slot. Blocks are short, so each one starts with a warm-up and a read.
	warm := func(p *DNSProbe, before bool, send func(int) error) {
		for j := 0; j < 10; j++ {
			if err := send(j); err != nil {
				b.Fatal(err)
			}
		}
		if before {
			if err := p.AssignSlots(); err != nil { // its pod counters have another layout than ReadPods reads
				b.Fatal(err)
			}
			return
		}
		if _, err := p.ReadPods(); err != nil {
			b.Fatal(err)
		}
	}
	empty, err := emptyprobe.Attach(root)
	if err != nil {
		b.Fatal(err)
	}
	defer empty.Close()
	stats, err := runstats.Enable()
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()

	svcName := func(i int) string { return fmt.Sprintf("svc-%d.ns.svc.cluster.local.", i%64) }
	var notDNSNet float64 // from the udp4-not-dns row, run first
	for _, tc := range []struct {
		name     string
		tcp, v6  bool
		nonDNS   bool
		nameFunc func(i int) string
	}{
		{name: "udp4-not-dns", nonDNS: true},
		{name: "udp4-query+response", nameFunc: svcName},
		{name: "udp6-query+response", v6: true, nameFunc: svcName},
		{name: "tcp4-query+response", tcp: true, nameFunc: svcName},
		{name: "udp4-unique-names", nameFunc: func(i int) string { return fmt.Sprintf("u%d.crawler.example.com.", i) }},
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
			// Blocks of round trips, alternating the two probe versions.
			const block = 2000
			var dns, emp [2]progRun // [0] current, [1] before
			b.ResetTimer()
			for i := 0; i < b.N; {
				for v := 0; v < 2 && i < b.N; v++ {
					b.StopTimer()
					p := load(v == 1)
					warm(p, v == 1, send)
					dns0 := readProgRun(b, p.objs.DnsEgress, p.objs.DnsIngress)
					empty0 := readProgRun(b, empty.Egress(), empty.Ingress())
					b.StartTimer()
					for j := 0; j < block && i < b.N; j, i = j+1, i+1 {
						if err := send(i); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					d := readProgRun(b, p.objs.DnsEgress, p.objs.DnsIngress).sub(dns0)
					e := readProgRun(b, empty.Egress(), empty.Ingress()).sub(empty0)
					p.Close()
					if d.count != e.count {
						b.Fatalf("probe ran %d times, empty program %d times", d.count, e.count)
					}
					dns[v].runtime += d.runtime
					dns[v].count += d.count
					emp[v].runtime += e.runtime
					emp[v].count += e.count
					b.StartTimer()
				}
			}
			b.StopTimer()
			if dns[0].count == 0 || dns[1].count == 0 {
				return // b.N too small for both versions (the first, calibrating run)
			}
			cur := dns[0].nsPerRun() - emp[0].nsPerRun()
			before := dns[1].nsPerRun() - emp[1].nsPerRun()
			b.ReportMetric(cur, "net-ns/pkt")
			b.ReportMetric(before, "before-net-ns/pkt")
			b.ReportMetric(emp[0].nsPerRun(), "empty-ns/pkt")
			if tc.nonDNS {
				notDNSNet = cur
			} else if !tc.tcp && !tc.v6 && notDNSNet != 0 {
				b.ReportMetric(0.99*notDNSNet+0.01*cur, "mix1%-net-ns/pkt")
			}
		})
	}
}

// BenchmarkDNSProbeVerifiedInstructions reports how many instructions the
// verifier walks per program (load time and complexity, not run time).
func BenchmarkDNSProbeVerifiedInstructions(b *testing.B) {
	l := newLab(b)
	root := l.cgroup("node")
	for i := 0; i < b.N; i++ {
		p, err := LoadDNS(Options{CgroupRoot: root})
		if err != nil {
			b.Fatal(err)
		}
		for _, pr := range []struct {
			prog *ebpf.Program
			unit string
		}{{p.objs.DnsEgress, "egress-verified-insns"}, {p.objs.DnsIngress, "ingress-verified-insns"}} {
			info, err := pr.prog.Info()
			if err != nil {
				b.Fatal(err)
			}
			if n, ok := info.VerifiedInstructions(); ok {
				b.ReportMetric(float64(n), pr.unit)
			}
		}
		p.Close()
	}
}

// BenchmarkDNSParserTestRun is the parser alone through BPF_PROG_TEST_RUN
// (no socket, no veth): a quick, low-noise comparison of code changes.
func BenchmarkDNSParserTestRun(b *testing.B) {
	r := newTestRunner(b)
	empty, err := emptyprobe.Load()
	if err != nil {
		b.Fatal(err)
	}
	defer empty.Close()
	pkt := ipv4Packet(protoUDP, udpSegment(40000, 53, dnsQuery(wireName("svc-1", "ns", "svc", "cluster", "local"))))
	var dnsNS, emptyNS float64
	err = r.lab.inCgroup(r.cg, r.lab.clientNS, func() error {
		_, d1, err := r.p.objs.DnsEgress.Benchmark(pkt, b.N, nil)
		if err != nil {
			return err
		}
		_, d2, err := empty.Egress().Benchmark(pkt, b.N, nil)
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

// BenchmarkDrainNames measures userspace's cost per drained (cgroup, name)
// entry: table swap, batch lookup-and-delete, wire-to-text decoding. The
// table is filled from userspace with 16384 unique flood-like names.
// BenchmarkDrainNames measures DrainNames on a table filled to a quarter,
// half (where early drains start during a flood) and full: the kernel's
// batch read-and-delete walks every bucket, so the cost per name falls as the
// table fills.
func BenchmarkDrainNames(b *testing.B) {
	for _, fill := range []int{4, 2, 1} {
		b.Run(fmt.Sprintf("fill=1/%d", fill), func(b *testing.B) { benchmarkDrainNames(b, DefaultMaxNames/fill) })
	}
}

func benchmarkDrainNames(b *testing.B, n int) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	l := newLab(b)
	p, err := LoadDNS(Options{CgroupRoot: l.cgroup("node"), NoEarlyDrain: true})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	keys := make([]dnsNameKey, n)
	vals := make([]dnsNameValue, n)
	for i := range keys {
		name := fmt.Sprintf("%012x", i*7919)
		w := append(append([]byte{byte(len(name))}, name...), 5, 'c', 'r', 'a', 'w', 'l', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0)
		copy(vals[i].Wire[:], w)
		vals[i].WireLen = uint32(len(w))
		vals[i].Queries = 1
		keys[i] = dnsNameKey{CgroupId: 42, NameHash: uint64(i)}
	}
	b.ResetTimer()
	var drained int
	var cpu time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if _, err := p.nameTables[p.active].BatchUpdate(keys, vals, nil); err != nil {
			b.Fatal(err)
		}
		c0 := threadCPU()
		b.StartTimer()
		if err := p.DrainNames(func(uint64, string, uint64, uint64) { drained++ }); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cpu += threadCPU() - c0
	}
	if drained != n*b.N {
		b.Fatalf("drained %d, want %d", drained, n*b.N)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(drained), "ns/name")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(drained), "cpu-ns/name")
}

// threadCPU is this thread's CPU time (the drain runs on the calling
// goroutine; the wall time also holds the table swap's RCU grace period).
func threadCPU() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}
