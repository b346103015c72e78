package daemon

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/isoobs/isoobs/bpf"
	"github.com/isoobs/isoobs/cgroupv2"
	"github.com/isoobs/isoobs/daemon/podresolver"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/testlab/needroot"
)

// TestDropsByDestinationPodInLab runs the TCP collector on the real probe, the real cgroup
// resolver and walk, and a pod table with addresses: a pod network namespace whose INPUT chain
// drops UDP to port 9997 (iptables and ip6tables) receives 31 IPv4 and 11 IPv6 datagrams for a
// port it has no socket for; its row shows exactly 42 NETFILTER_DROP packets, though no process
// of the pod ever ran. The other end (standing for the host: an address that is no pod's) drops
// 19 datagrams the same way: no row, exactly 19 NETFILTER_DROP in the node's no-socket row.
func TestDropsByDestinationPodInLab(t *testing.T) {
	l := newDropDstLab(t)
	cfg := &Config{NodeName: "lab-node", CgroupRoot: l.root, Interval: time.Second}
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	probe, err := bpf.LoadTCP(bpf.TCPOptions{CgroupRoot: l.root})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	pods := fakePods{dropDstLabUID: {UID: dropDstLabUID, Name: "target-0", Namespace: "tenant-jobs", Workload: "target", WorkloadKind: "StatefulSet",
		IPs: []string{"10.200.0.2", "fd00:200::2"}}}
	now := time.Now()
	c := newTCPCollector(cfg, probe, podresolver.NewResolver(l.root, 0), pods, now)
	q, err := newTCPQuery(&isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DROPS, SinceStreamStart: true}, cfg.Interval)
	if err != nil {
		t.Fatal(err)
	}
	c.tick(now)
	c.startStream(q)

	const n4, n6, nHost = 31, 11, 19
	l.send(t, l.hostNS, netip.MustParseAddr("10.200.0.2"), n4)
	l.send(t, l.hostNS, netip.MustParseAddr("fd00:200::2"), n6)
	l.send(t, l.podNS, netip.MustParseAddr("10.200.0.1"), nHost)

	nfBytes := func(r *isoobsv1.DropRow) (n uint64) {
		for _, x := range r.GetReasons() {
			if x.Reason == "NETFILTER_DROP" {
				n += x.Bytes
			}
		}
		return n
	}
	nfOf := func(r *isoobsv1.DropRow) (n uint64) {
		for _, x := range r.GetReasons() {
			if x.Reason == "NETFILTER_DROP" {
				n += x.Packets
			}
		}
		return n
	}
	var f *isoobsv1.TopFrame
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		now = now.Add(time.Second)
		c.tick(now)
		f = c.frame(q)
		if len(f.DropRows) == 1 && nfOf(f.DropRows[0]) == n4+n6 && nfOf(f.DropNoSocket) == nHost {
			break
		}
	}
	for _, r := range f.DropRows {
		t.Logf("row %s/%s: %d packets %v", r.Namespace, r.Pod, r.Packets, r.Reasons)
	}
	t.Logf("no socket: %d packets %v", f.DropNoSocket.GetPackets(), f.DropNoSocket.GetReasons())
	if len(f.DropRows) != 1 || f.DropRows[0].Pod != "target-0" || nfOf(f.DropRows[0]) != n4+n6 || nfBytes(f.DropRows[0]) != n4*(64+28)+n6*(64+48) {
		t.Errorf("drop rows %v; want target-0 with exactly %d NETFILTER_DROP (%d IPv4 + %d IPv6) of %d bytes", f.DropRows, n4+n6, n4, n6, n4*(64+28)+n6*(64+48))
	}
	if got := nfOf(f.DropNoSocket); got != nHost {
		t.Errorf("no-socket NETFILTER_DROP %d, want the %d to the address that is no pod's", got, nHost)
	}
}

// dropDstLab is a cgroup root with one pod's cgroup (uid dropDstLabUID) and two network
// namespaces joined by a veth: the pod's (eth0, 10.200.0.2, fd00:200::2) and the other end
// (vhost, 10.200.0.1, fd00:200::1), both dropping UDP to port 9997 in INPUT.
type dropDstLab struct {
	root, podNS, hostNS string
	run                 func(args ...string)
}

const dropDstLabUID = "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d"

func newDropDstLab(t *testing.T) *dropDstLab {
	t.Helper()
	needroot.Require(t, "loads eBPF programs, creates cgroups and network namespaces")
	for _, tool := range []string{"ip", "iptables", "ip6tables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	mount, err := cgroupv2.Detect()
	if err != nil {
		t.Fatal(err)
	}
	const uid = dropDstLabUID
	root := filepath.Join(mount, fmt.Sprintf("isoobs-drop-dst-test-%d", os.Getpid()))
	podDir := filepath.Join(root, "kubepods.slice", "kubepods-besteffort.slice", "kubepods-besteffort-pod"+strings.ReplaceAll(uid, "-", "_")+".slice")
	if err := os.MkdirAll(podDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for d := podDir; d != mount; d = filepath.Dir(d) {
			_ = os.Remove(d)
		}
	})
	podNS, hostNS := fmt.Sprintf("isoobs-dd-pod-%d", os.Getpid()), fmt.Sprintf("isoobs-dd-host-%d", os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	run("ip", "netns", "add", podNS)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", podNS).Run() })
	run("ip", "netns", "add", hostNS)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", hostNS).Run() })
	run("ip", "-n", hostNS, "link", "add", "vhost", "type", "veth", "peer", "name", "eth0", "netns", podNS)
	for _, x := range []struct{ ns, dev, v4, v6 string }{{podNS, "eth0", "10.200.0.2/24", "fd00:200::2/64"}, {hostNS, "vhost", "10.200.0.1/24", "fd00:200::1/64"}} {
		run("ip", "-n", x.ns, "addr", "add", x.v4, "dev", x.dev)
		run("ip", "-n", x.ns, "addr", "add", x.v6, "dev", x.dev, "nodad")
		run("ip", "-n", x.ns, "link", "set", x.dev, "up")
		run("ip", "-n", x.ns, "link", "set", "lo", "up")
		for _, tool := range []string{"iptables", "ip6tables"} {
			run("ip", "netns", "exec", x.ns, tool, "-A", "INPUT", "-p", "udp", "--dport", "9997", "-j", "DROP")
		}
	}
	return &dropDstLab{root: root, podNS: podNS, hostNS: hostNS, run: run}
}

// send sends n datagrams of 64 bytes from the namespace ns to port 9997 of dst.
func (l *dropDstLab) send(t *testing.T, ns string, dst netip.Addr, n int) {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	err = func() error {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		if err := netns.Set(h); err != nil {
			return err
		}
		defer netns.Set(orig)
		u, err := net.Dial("udp", netip.AddrPortFrom(dst, 9997).String())
		if err != nil {
			return err
		}
		defer u.Close()
		for range n {
			if _, err := u.Write(make([]byte, 64)); err != nil {
				return err
			}
		}
		return nil
	}()
	if err != nil {
		t.Fatal(err)
	}
}

// TestDropDestinationsForgottenInLab fills the real probe's per-destination table (256 entries
// here) past its bound and shows idle entries collected: the pod namespace owns 10.201.0.0/16
// and fd00:201::/64 (local routes) and drops UDP to port 9997; the other end sends one datagram
// to each of 150 IPv4 and 50 IPv6 addresses of the pod, three times with new addresses (600),
// after 2 to its veth addresses, and 3 more to two addresses whose entries were collected (6).
// With the daemon collecting entries idle for a minute (the collector's clock moved 61 s after
// each round), the pod's row has exactly 608 NETFILTER_DROP packets (59,016 bytes), none of a
// round's 200 entries is left in the kernel table after it, and drops_destination_map_full stays
// 0. Without the collection the same traffic overflows: at most 256 of the 602 addresses get an
// entry, and the pod's row is short by what overflowed (346 here: 262 counted).
func TestDropDestinationsForgottenInLab(t *testing.T) {
	l := newDropDstLab(t)
	l.run("ip", "-n", l.podNS, "route", "add", "local", "10.201.0.0/16", "dev", "lo")
	l.run("ip", "-n", l.podNS, "-6", "route", "add", "local", "fd00:201::/64", "dev", "lo")
	l.run("ip", "-n", l.hostNS, "route", "add", "10.201.0.0/16", "via", "10.200.0.2")
	l.run("ip", "-n", l.hostNS, "-6", "route", "add", "fd00:201::/64", "via", "fd00:200::2")
	const table, rounds, per4, per6, resend = 256, 3, 150, 50, 3
	const bytes4, bytes6 = 64 + 28, 64 + 48
	var round [][]netip.Addr
	for r := range rounds {
		var as []netip.Addr
		for i := range per4 {
			as = append(as, netip.AddrFrom4([4]byte{10, 201, byte(r + 1), byte(i + 1)}))
		}
		for i := range per6 {
			as = append(as, netip.AddrFrom16([16]byte{0xfd, 0, 2, 1, 14: byte(r + 1), 15: byte(i + 1)}))
		}
		round = append(round, as)
	}
	for _, gc := range []bool{true, false} {
		t.Run(map[bool]string{true: "collected", false: "never-collected"}[gc], func(t *testing.T) {
			probe, err := bpf.LoadTCP(bpf.TCPOptions{CgroupRoot: l.root, MaxDropDestinations: table})
			if err != nil {
				t.Fatal(err)
			}
			defer probe.Close()
			reasons, err := bpfDropReasons()
			if err != nil {
				t.Skip(err)
			}
			nf := reasons["NETFILTER_DROP"]
			// Every tick collects (gcEvery is 1 at a 10 s interval); the clock is the test's.
			cfg := &Config{NodeName: "lab-node", CgroupRoot: l.root, Interval: 10 * time.Second}
			if err := cfg.setDefaults(); err != nil {
				t.Fatal(err)
			}
			var src TCPSource = probe
			if !gc {
				src = noDropDstDelete{probe}
			}
			ips := []string{"10.200.0.2", "fd00:200::2"}
			for _, as := range round {
				for _, a := range as {
					ips = append(ips, a.String())
				}
			}
			pods := fakePods{dropDstLabUID: {UID: dropDstLabUID, Name: "target-0", Namespace: "tenant-jobs", Workload: "target", WorkloadKind: "StatefulSet", IPs: ips}}
			now := time.Now()
			c := newTCPCollector(cfg, src, podresolver.NewResolver(l.root, 0), pods, now)
			q, err := newTCPQuery(&isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DROPS, SinceStreamStart: true}, cfg.Interval)
			if err != nil {
				t.Fatal(err)
			}
			c.tick(now)
			c.startStream(q)
			podNF := func() (packets, bytes uint64) {
				for _, r := range c.frame(q).DropRows {
					for _, x := range r.GetReasons() {
						if r.Pod == "target-0" && x.Reason == "NETFILTER_DROP" {
							packets, bytes = packets+x.Packets, bytes+x.Bytes
						}
					}
				}
				return packets, bytes
			}
			overflowNF := func() uint64 {
				drops, err := probe.ReadDrops()
				if err != nil {
					t.Fatal(err)
				}
				return drops[bpf.DropKey{Reason: nf}].Packets
			}
			// wait ticks (the clock 1 s on per tick) until the pod's row and the drops that
			// overflowed the table hold want packets.
			wait := func(want uint64) {
				t.Helper()
				for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
					now = now.Add(time.Second)
					c.tick(now)
					got, _ := podNF()
					if got+overflowNF() >= want || time.Now().After(deadline) {
						return
					}
				}
			}
			inTable := func(as []netip.Addr) (n int) {
				dsts, err := probe.ReadDropDestinations()
				if err != nil {
					t.Fatal(err)
				}
				for _, a := range as {
					if _, ok := dsts[bpf.DropDstKey{Addr: a, Reason: nf}]; ok {
						n++
					}
				}
				return n
			}
			var want, wantBytes uint64
			// The neighbours first (a datagram queued behind neighbour discovery could be
			// dropped there, by another reason).
			l.send(t, l.hostNS, netip.MustParseAddr("10.200.0.2"), 1)
			l.send(t, l.hostNS, netip.MustParseAddr("fd00:200::2"), 1)
			want, wantBytes = 2, bytes4+bytes6
			wait(want)
			for r, as := range round {
				for _, a := range as {
					l.send(t, l.hostNS, a, 1)
				}
				want += per4 + per6
				wantBytes += per4*bytes4 + per6*bytes6
				wait(want)
				entries := inTable(as)
				// A minute and a second later every entry of the round is idle.
				now = now.Add(61 * time.Second)
				c.tick(now)
				left := inTable(as)
				c.mu.RLock()
				forgotten := c.dropDstsForgotten
				var tracked int
				for _, a := range as {
					if c.dstLast[bpf.DropDstKey{Addr: a, Reason: nf}] != nil {
						tracked++
					}
				}
				c.mu.RUnlock()
				t.Logf("round %d: %d of the round's %d addresses had an entry, %d left after the collection; %d entries collected so far", r, entries, len(as), left, forgotten)
				if gc && (entries != len(as) || left != 0 || tracked != 0 || forgotten < uint64((r+1)*len(as))) {
					t.Errorf("round %d: %d entries, %d left in the table, %d still tracked, %d collected; want %d, 0, 0, at least %d", r, entries, left, tracked, forgotten, len(as), (r+1)*len(as))
				}
			}
			// Drops to addresses whose entries were collected: new entries, counted from zero.
			l.send(t, l.hostNS, round[0][0], resend)
			l.send(t, l.hostNS, round[0][per4], resend)
			want += 2 * resend
			wantBytes += resend * (bytes4 + bytes6)
			wait(want)
			got, gotBytes := podNF()
			st, err := probe.Stats()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("pod row %d NETFILTER_DROP (%d bytes); table %d of %d entries, map full %d, collected %d", got, gotBytes, st.DropDests.Entries, st.DropDests.Max, st.DropDstOverflow, c.dropDstsForgotten)
			if gc {
				if got != want || gotBytes != wantBytes || st.DropDstOverflow != 0 {
					t.Errorf("pod row %d NETFILTER_DROP (%d bytes), map full %d; want exactly %d (%d bytes), 0", got, gotBytes, st.DropDstOverflow, want, wantBytes)
				}
				return
			}
			// Never collected: 602 addresses in 256 entries (fewer if the host's own drops took
			// some); what overflowed is not the pod's.
			const addrs = 2 + rounds*(per4+per6)
			if lost := want - got; st.DropDstOverflow < lost || lost < addrs-table {
				t.Errorf("pod row %d of %d NETFILTER_DROP, map full %d; want at least %d lost to the full table, all counted as map full", got, want, st.DropDstOverflow, addrs-table)
			}
		})
	}
}

// noDropDstDelete is the probe without DeleteDropDestinations: the daemon as it was.
type noDropDstDelete struct{ *bpf.TCPProbe }

func (noDropDstDelete) DeleteDropDestinations() {} // hides the probe's
