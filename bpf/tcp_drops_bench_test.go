package bpf

import (
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/isoobs/isoobs/bpf/runstats"
	"github.com/isoobs/isoobs/cgroupv2"
)

// dropsBeforeObject is the TCP probe object before socket-less drops were counted per
// destination (commit da4100f^: such drops counted under cgroup 0 only). The drop benchmark
// attaches its kfree_skb program beside the current one, so both figures come from the same
// packets in one run.
const dropsBeforeObject = "testdata/tcp_drops_before_bpfel.o"

// BenchmarkDropCostPerPacket measures the kfree_skb program's cost per dropped packet
// (run_time_ns/run_cnt with kernel.bpf_stats_enabled), the current program and the one before
// per-destination counting attached to the same tracepoint in the same run. Rows: a pod's
// datagram dropped at OUTPUT (it has its socket: the cgroup path, unchanged), and datagrams
// dropped at the receiver's INPUT without a socket, IPv4 and IPv6 (the destination path: IP
// header read, drop_dsts). Packets the kernel does not drop never run it (consume_skb is another
// tracepoint).
func BenchmarkDropCostPerPacket(b *testing.B) {
	if _, err := exec.LookPath("ip6tables"); err != nil {
		b.Skip("needs iptables and ip6tables")
	}
	l := newLab(b)
	root := l.cgroup("node")
	pod := l.cgroup("node/pod")
	p, err := LoadTCP(TCPOptions{CgroupRoot: root})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	spec, err := ebpf.LoadCollectionSpec(dropsBeforeObject)
	if err != nil {
		b.Fatal(err)
	}
	rootID, err := cgroupv2.ID(root)
	if err != nil {
		b.Fatal(err)
	}
	if err := spec.Variables["root_cgroup_id"].Set(rootID); err != nil {
		b.Fatal(err)
	}
	var before struct {
		DropSkb *ebpf.Program `ebpf:"drop_skb"`
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		b.Fatal(err)
	}
	defer coll.Close()
	if err := coll.Assign(&before); err != nil {
		b.Fatal(err)
	}
	// Two programs on one tracepoint run in attach order, and the first takes the cache misses
	// on the packet and the maps: each row runs with either order, the figure is their mean.
	last := len(p.links) - 1
	if p.attachments[last].Program != "drop_skb" {
		b.Fatal("drop_skb is not the last link")
	}
	p.links[last].Close()
	p.links = p.links[:last]
	var links []link.Link
	attach := func(progs ...*ebpf.Program) {
		for _, l := range links {
			l.Close()
		}
		links = nil
		for _, prog := range progs {
			lk, err := link.AttachTracing(link.TracingOptions{Program: prog})
			if err != nil {
				b.Fatal(err)
			}
			links = append(links, lk)
		}
	}
	defer func() { attach() }()
	stats, err := runstats.Enable()
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()
	for _, c := range []struct {
		ns   func() error
		args []string
	}{
		{nil, []string{"iptables", "-A", "OUTPUT", "-p", "udp", "--dport", "9996", "-j", "DROP"}},
		{nil, []string{"iptables", "-A", "INPUT", "-p", "udp", "--dport", "9995", "-j", "DROP"}},
		{nil, []string{"ip6tables", "-A", "INPUT", "-p", "udp", "--dport", "9995", "-j", "DROP"}},
	} {
		ns := l.clientNS
		if c.args[2] == "INPUT" {
			ns = l.serverNS
		}
		err := inNetns(ns, func() error {
			if out, err := exec.Command(c.args[0], c.args[1:]...).CombinedOutput(); err != nil {
				return errors.New(string(out))
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		dst  netip.AddrPort
	}{
		{"socket-egress-OUTPUT-v4", netip.AddrPortFrom(serverV4, 9996)},
		{"no-socket-INPUT-v4", netip.AddrPortFrom(serverV4, 9995)},
		{"no-socket-INPUT-v6", netip.AddrPortFrom(serverV6, 9995)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var c net.Conn
			if err := l.inCgroup(pod, l.clientNS, func() (err error) {
				c, err = net.Dial("udp", tc.dst.String())
				return err
			}); err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, 64)
			attach(p.objs.DropSkb)
			for range 64 { // neighbour resolved, entries made: the steady state
				_, _ = c.Write(buf)
			}
			var now, prev progRun
			b.ResetTimer()
			for _, order := range [][]*ebpf.Program{{p.objs.DropSkb, before.DropSkb}, {before.DropSkb, p.objs.DropSkb}} {
				b.StopTimer()
				attach(order...)
				now0, before0 := readProgRun(b, p.objs.DropSkb), readProgRun(b, before.DropSkb)
				b.StartTimer()
				for i := 0; i < b.N/2; i++ {
					_, _ = c.Write(buf) // OUTPUT: EPERM, as netfilter says
				}
				b.StopTimer()
				d, e := readProgRun(b, p.objs.DropSkb).sub(now0), readProgRun(b, before.DropSkb).sub(before0)
				now.runtime, now.count = now.runtime+d.runtime, now.count+d.count
				prev.runtime, prev.count = prev.runtime+e.runtime, prev.count+e.count
			}
			if now.count == 0 || prev.count == 0 {
				return
			}
			b.ReportMetric(now.nsPerRun(), "ns/drop")
			b.ReportMetric(prev.nsPerRun(), "before-ns/drop")
			b.ReportMetric(float64(now.count)/float64(b.N/2*2), "drops/op")
		})
	}
}
