package bpf

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/isoobs/isoobs/bench/emptyprobe"
	"github.com/isoobs/isoobs/bpf/runstats"
)

// BenchmarkTCPProbeCostPerPacket measures the TCP probe's in-kernel cost per packet on real
// traffic through a veth, as BenchmarkDNSProbeCostPerPacket does: run_time_ns/run_cnt of the
// cgroup_skb programs minus that of empty cgroup_skb programs attached to the same cgroup in
// the same run. Rows: UDP (not TCP: the cost every other packet pays), TCP request/response
// (64 bytes each way: data with piggybacked ACKs), TCP bulk (64 KiB writes: GSO/GRO packets).
// The egress program's RTT sample (at most one per socket every 100 ms) is in its cost.
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
			progs := []*ebpf.Program{p.objs.TcpEgress, p.objs.TcpIngress}
			tcp0, empty0 := readProgRun(b, progs...), readProgRun(b, empty.Egress(), empty.Ingress())
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := send(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			d := readProgRun(b, progs...).sub(tcp0)
			e := readProgRun(b, empty.Egress(), empty.Ingress()).sub(empty0)
			if d.count == 0 || e.count == 0 {
				return
			}
			b.ReportMetric(d.nsPerRun()-e.nsPerRun(), "net-ns/pkt")
			b.ReportMetric(e.nsPerRun(), "empty-ns/pkt")
			b.ReportMetric(float64(d.count)/float64(b.N), "pkts/op")
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
