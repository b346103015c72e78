package bpf

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/isoobs/isoobs/bench/emptyprobe"
	"github.com/isoobs/isoobs/bpf/runstats"
)

// tcpBeforeObject is the TCP probe object before the per-packet cost work (commit 745f952:
// headers read by bpf_skb_load_bytes, every cgroup's counters in the hash, the RTT sample
// timed by bpf_ktime_get_ns). The cost benchmark attaches it and the current object
// alternately, so both figures come from one run on one machine.
const tcpBeforeObject = "testdata/tcp_before_bpfel.o"

// BenchmarkTCPProbeCostPerPacket measures the TCP probe's in-kernel cost per packet on real
// traffic through a veth, as BenchmarkDNSProbeCostPerPacket does: run_time_ns/run_cnt of the
// cgroup_skb programs minus that of empty cgroup_skb programs attached to the same cgroup in
// the same run. The current programs and the earlier ones (tcpBeforeObject) are attached
// alternately, in blocks of round trips, one at a time; each block starts with a warm-up and,
// for the current probe, a read (the daemon reads every second: the pod then has a fast-path
// slot). Rows: UDP (not TCP: the cost every other packet pays), TCP request/response (64 bytes
// each way: data with piggybacked ACKs), TCP bulk (64 KiB writes: GSO/GRO packets). The egress
// program's RTT sample (at most one per socket every 100 ms) is in its cost. Metrics:
// net-ns/pkt (current), before-net-ns/pkt, empty-ns/pkt, pkts/op.
func BenchmarkTCPProbeCostPerPacket(b *testing.B) {
	l := newLab(b)
	root := l.cgroup("node")
	pod := l.cgroup("node/pod")
	server := l.cgroup("server") // outside the root: only the client side is measured
	echo := startUDPEcho(b, l, server)
	ln := l.listenInTB(b, server, 8090)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if n <= 64 { // request/response: answer; bulk: only read
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	p, err := LoadTCP(TCPOptions{CgroupRoot: root})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	// Its cgroup programs are attached block by block below, like the earlier ones.
	for _, l := range p.links[:2] {
		l.Close()
	}
	spec, err := ebpf.LoadCollectionSpec(tcpBeforeObject)
	if err != nil {
		b.Fatal(err)
	}
	beforeColl, err := ebpf.NewCollection(spec)
	if err != nil {
		b.Fatal(err)
	}
	defer beforeColl.Close()
	variants := []struct {
		name  string
		progs []*ebpf.Program // egress, ingress
		read  func() error
	}{
		{"before", []*ebpf.Program{beforeColl.Programs["tcp_egress"], beforeColl.Programs["tcp_ingress"]}, func() error { return nil }},
		{"now", []*ebpf.Program{p.objs.TcpEgress, p.objs.TcpIngress}, func() error { _, err := p.ReadTCP(); return err }},
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

	dialTCP := func(b *testing.B) net.Conn {
		var c net.Conn
		err := l.inCgroup(pod, l.clientNS, func() (err error) {
			c, err = net.Dial("tcp", netip.AddrPortFrom(serverV4, 8090).String())
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(5 * time.Minute))
		return c
	}
	const rounds = 5
	for _, tc := range []struct {
		name string
		conn func(b *testing.B) (send func() error)
	}{
		{"udp4-not-tcp", func(b *testing.B) func() error {
			c := dialEcho(b, l, pod, echo)
			buf := make([]byte, 64)
			return func() error {
				if _, err := c.Write(buf[:40]); err != nil {
					return err
				}
				_, err := c.Read(buf)
				return err
			}
		}},
		{"tcp4-request+response", func(b *testing.B) func() error {
			c := dialTCP(b)
			buf := make([]byte, 64)
			return func() error {
				if _, err := c.Write(buf); err != nil {
					return err
				}
				_, err := io.ReadFull(c, buf)
				return err
			}
		}},
		{"tcp4-bulk-64KiB-writes", func(b *testing.B) func() error {
			c := dialTCP(b)
			buf := make([]byte, 64<<10)
			return func() error {
				_, err := c.Write(buf)
				return err
			}
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			send := tc.conn(b)
			block := b.N/(rounds*len(variants)) + 1
			var run, emptyRun [2]progRun
			var packets uint64
			for range rounds {
				for i, v := range variants {
					var links []link.Link
					for j, typ := range []ebpf.AttachType{ebpf.AttachCGroupInetEgress, ebpf.AttachCGroupInetIngress} {
						lk, err := link.AttachCgroup(link.CgroupOptions{Path: root, Attach: typ, Program: v.progs[j]})
						if err != nil {
							b.Fatal(err)
						}
						links = append(links, lk)
					}
					for range 10 {
						if err := send(); err != nil {
							b.Fatal(err)
						}
					}
					if err := v.read(); err != nil {
						b.Fatal(err)
					}
					d0, e0 := readProgRun(b, v.progs...), readProgRun(b, empty.Egress(), empty.Ingress())
					for range block {
						if err := send(); err != nil {
							b.Fatal(err)
						}
					}
					d := readProgRun(b, v.progs...).sub(d0)
					e := readProgRun(b, empty.Egress(), empty.Ingress()).sub(e0)
					for _, lk := range links {
						lk.Close()
					}
					run[i].runtime += d.runtime
					run[i].count += d.count
					emptyRun[i].runtime += e.runtime
					emptyRun[i].count += e.count
					if v.name == "now" {
						packets += d.count
					}
				}
			}
			if run[1].count == 0 || emptyRun[1].count == 0 {
				return
			}
			b.ReportMetric(run[1].nsPerRun()-emptyRun[1].nsPerRun(), "net-ns/pkt")
			b.ReportMetric(run[0].nsPerRun()-emptyRun[0].nsPerRun(), "before-net-ns/pkt")
			b.ReportMetric(emptyRun[1].nsPerRun(), "empty-ns/pkt")
			b.ReportMetric(float64(packets)/float64(rounds*block), "pkts/op")
		})
	}
}

// listenInTB is listenIn for benchmarks.
func (l *lab) listenInTB(b *testing.B, cgroupDir string, port int) net.Listener {
	b.Helper()
	var ln net.Listener
	err := l.inCgroup(cgroupDir, l.serverNS, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(serverV4, uint16(port)).String())
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	return ln
}
