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
	const uid = "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d"
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

	cfg := &Config{NodeName: "lab-node", CgroupRoot: root, Interval: time.Second}
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	probe, err := bpf.LoadTCP(bpf.TCPOptions{CgroupRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	pods := fakePods{uid: {UID: uid, Name: "target-0", Namespace: "tenant-jobs", Workload: "target", WorkloadKind: "StatefulSet",
		IPs: []string{"10.200.0.2", "fd00:200::2"}}}
	now := time.Now()
	c := newTCPCollector(cfg, probe, podresolver.NewResolver(root, 0), pods, now)
	q, err := newTCPQuery(&isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DROPS, SinceStreamStart: true}, cfg.Interval)
	if err != nil {
		t.Fatal(err)
	}
	c.tick(now)
	c.startStream(q)

	send := func(ns string, dst netip.Addr, n int) {
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
	const n4, n6, nHost = 31, 11, 19
	send(hostNS, netip.MustParseAddr("10.200.0.2"), n4)
	send(hostNS, netip.MustParseAddr("fd00:200::2"), n6)
	send(podNS, netip.MustParseAddr("10.200.0.1"), nHost)

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
