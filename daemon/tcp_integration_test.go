package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/isoobs/isoobs/cgroupv2"
	"github.com/isoobs/isoobs/daemon"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/testlab/needroot"
)

// inCgroupNetns runs fn with this process in cgroupDir and the calling thread in ns: the
// sockets fn creates belong to that cgroup (a socket's cgroup is fixed when it is created).
func inCgroupNetns(t *testing.T, cgroupDir string, ns netns.NsHandle, fn func() error) error {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		return err
	}
	defer netns.Set(orig)
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return err
	}
	mount, err := cgroupv2.Mount()
	if err != nil {
		return err
	}
	var back string
	for _, line := range strings.Split(string(own), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			back = filepath.Join(mount, rest)
		}
	}
	if back == "" {
		return errors.New("no cgroup v2 line in /proc/self/cgroup")
	}
	move := func(dir string) error {
		return os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	}
	if err := move(cgroupDir); err != nil {
		return fmt.Errorf("join cgroup %s: %w", cgroupDir, err)
	}
	defer func() {
		if err := move(back); err != nil {
			t.Errorf("move back to cgroup %s: %v", back, err)
		}
	}()
	return fn()
}

// loopbackNetns is a fresh network namespace with only lo up.
func loopbackNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err2 := netns.Set(orig); err == nil {
		err = err2
	}
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

func tcpRowByUID(f *isoobsv1.TopFrame, uid string) *isoobsv1.TCPRow {
	for _, r := range f.TcpRows {
		if r.PodUid == uid {
			return r
		}
	}
	return nil
}

// TestDaemonTCPRealProbe runs the daemon with the real TCP probe on kubelet-named cgroups: a
// client pod refuses, opens and gets reset, a server pod accepts and resets, a host process
// does the same as the client; Top (DIMENSION_TCP) must report exactly the pods' part.
func TestDaemonTCPRealProbe(t *testing.T) {
	needroot.Require(t, "loads eBPF programs, creates cgroups and network namespaces")
	mount, err := cgroupv2.Detect()
	if err != nil {
		t.Fatal(err)
	}
	const (
		uidClient = "5a1b2c3d-4e5f-4a6b-8c7d-8e9fa0b1c2d3" // systemd driver
		uidServer = "e0e1d2c3-b4a5-4697-8889-7a6b5c4d3e2f" // cgroupfs driver
	)
	root := filepath.Join(mount, fmt.Sprintf("isoobs-daemon-tcp-test-%d", os.Getpid()))
	podC := "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + strings.ReplaceAll(uidClient, "-", "_") + ".slice"
	ctrC := podC + "/cri-containerd-4f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0.scope"
	podS := "kubepods/burstable/pod" + uidServer
	ctrS := podS + "/8796a5b4c3d2e1f00112233445566778899aabbccddeeff04f1e2d3c4b5a6978"
	host := "system.slice/chronyd.service"
	makeCgroups(t, root, ctrC, ctrS, host)
	ns := loopbackNetns(t)

	d, err := daemon.New(daemon.Config{NodeName: "lab-node-1", CgroupRoot: root, Interval: 200 * time.Millisecond, HubbleDisabled: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	client := inProcessClient(t, d)
	st, err := client.Status(ctx, &isoobsv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	tcpProbes, chainedDNS := 0, 0
	for _, p := range st.Probes {
		// One program a packet: the TCP programs run the DNS ones (a tail call).
		if strings.HasPrefix(p.Name, "dns_") && p.Attached && strings.Contains(p.Hook, "(tail call from tcp_") {
			chainedDNS++
		}
		if strings.HasPrefix(p.Name, "tcp") {
			if !p.Attached {
				t.Errorf("TCP program %s (%s) not attached: %s", p.Name, p.Hook, p.Error)
			}
			tcpProbes++
		}
	}
	if tcpProbes != 7 { // cgroup_skb egress and ingress, 5 tracepoints (drop_skb is not tcp_*)
		t.Errorf("status lists %d TCP programs, want 7: %v", tcpProbes, st.Probes)
	}
	if chainedDNS != 2 {
		t.Errorf("status lists %d DNS programs run by the TCP ones, want 2: %v", chainedDNS, st.Probes)
	}

	stream, err := client.Top(ctx, &isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_TCP, SinceStreamStart: true})
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := inCgroupNetns(t, filepath.Join(root, ctrS), ns, func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:8443")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const refused, conns, payload = 30, 12, 50_000
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, _ = io.CopyN(io.Discard, c, payload)
				c.(*net.TCPConn).SetLinger(0) // close with a RST
				c.Close()
			}()
		}
	}()
	dial := func(cgroup string, port int) (net.Conn, error) {
		var c net.Conn
		err := inCgroupNetns(t, filepath.Join(root, cgroup), ns, func() (err error) {
			c, err = net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
			return err
		})
		return c, err
	}
	for _, cg := range []string{ctrC, host} {
		for range refused {
			if _, err := dial(cg, 9); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("connect to a closed port from %s: %v, want ECONNREFUSED", cg, err)
			}
		}
		for range conns {
			c, err := dial(cg, 8443)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write(make([]byte, payload)); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("want the server's reset, got %v", err)
			}
			c.Close()
		}
	}

	// The host's connections go to the server pod too: the server's counts are doubled,
	// the client's are its own.
	f := waitFrame(t, stream, 50, func(f *isoobsv1.TopFrame) bool {
		c, s := tcpRowByUID(f, uidClient), tcpRowByUID(f, uidServer)
		return c != nil && s != nil && c.ConnectRefused >= refused && c.ResetsReceived >= conns && s.ResetsSent >= 2*conns && s.BytesIn >= 2*conns*payload
	})
	if len(f.TcpRows) != 2 {
		t.Fatalf("rows: want the client and server pods only (the host process is no pod), got %v", f.TcpRows)
	}
	c, s := tcpRowByUID(f, uidClient), tcpRowByUID(f, uidServer)
	if c.ConnectRefused != refused || c.ActiveOpens != conns || c.ResetsReceived != conns || c.ResetsSent != 0 || c.BytesOut != conns*payload || c.PassiveOpens != 0 {
		t.Errorf("client pod: refused %d opens %d resets in %d out %d bytes out %d passive %d; want %d, %d, %d, 0, %d, 0",
			c.ConnectRefused, c.ActiveOpens, c.ResetsReceived, c.ResetsSent, c.BytesOut, c.PassiveOpens, refused, conns, conns, conns*payload)
	}
	if s.PassiveOpens != 2*conns || s.ResetsSent != 2*conns || s.BytesIn != 2*conns*payload || s.ActiveOpens != 0 || s.ConnectRefused != 0 {
		t.Errorf("server pod: passive %d resets sent %d bytes in %d active %d refused %d; want %d, %d, %d, 0, 0",
			s.PassiveOpens, s.ResetsSent, s.BytesIn, s.ActiveOpens, s.ConnectRefused, 2*conns, 2*conns, 2*conns*payload)
	}
	if c.Cgroup != "/"+podC || s.Cgroup != "/"+podS || c.Node != "lab-node-1" {
		t.Errorf("identity: client cgroup %q, server cgroup %q, node %q", c.Cgroup, s.Cgroup, c.Node)
	}
	if f.TcpTotal.ConnectRefused != refused {
		t.Errorf("total refused %d, want %d (the host's left out)", f.TcpTotal.ConnectRefused, refused)
	}
	// Peers, ranked by errors: the client's refused port first (30), then the resetting server
	// (12 opens, 12 resets); the server's one peer is 127.0.0.1 (the client pod's and the
	// host's connections: a host is a peer, never a row).
	type peerWant struct {
		ip                            string
		port                          uint32
		inbound                       bool
		opens, refused, rstIn, rstOut uint64
	}
	checkPeers := func(who string, got []*isoobsv1.TCPPeer, want []peerWant) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("%s peers: %v, want %d", who, got, len(want))
			return
		}
		for i, w := range want {
			g := got[i]
			if g.Ip != w.ip || g.Port != w.port || g.Inbound != w.inbound || g.Opens != w.opens || g.ConnectRefused != w.refused || g.ResetsReceived != w.rstIn || g.ResetsSent != w.rstOut {
				t.Errorf("%s peer %d: %v, want %+v", who, i, g, w)
			}
		}
	}
	checkPeers("client", c.TopPeers, []peerWant{{ip: "127.0.0.1", port: 9, refused: refused}, {ip: "127.0.0.1", port: 8443, opens: conns, rstIn: conns}})
	checkPeers("server", s.TopPeers, []peerWant{{ip: "127.0.0.1", inbound: true, opens: 2 * conns, rstOut: 2 * conns}})
	if c.PeerUnattributed != 0 || s.PeerUnattributed != 0 {
		t.Errorf("events without a peer: client %d, server %d; want 0", c.PeerUnattributed, s.PeerUnattributed)
	}
	byPeer, err := client.Top(ctx, &isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_TCP, GroupBy: isoobsv1.GroupBy_GROUP_BY_PEER})
	if err != nil {
		t.Fatal(err)
	}
	pf, err := byPeer.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var peerRows []*isoobsv1.TCPPeer
	for _, r := range pf.TcpRows {
		peerRows = append(peerRows, r.Peer)
	}
	checkPeers("group by peer", peerRows, []peerWant{{ip: "127.0.0.1", port: 9, refused: refused},
		{ip: "127.0.0.1", inbound: true, opens: 2 * conns, rstOut: 2 * conns}, {ip: "127.0.0.1", port: 8443, opens: conns, rstIn: conns}})
	st, err = client.Status(ctx, &isoobsv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Counters["tcp_host_cgroups"] != 1 || st.Counters["tcp_host_connections_opened"] != conns {
		t.Errorf("status: host cgroups %d, host connections %d; want 1 and %d", st.Counters["tcp_host_cgroups"], st.Counters["tcp_host_connections_opened"], conns)
	}
	t.Logf("client %v\nserver %v", c, s)

	// Drops: an iptables DROP in the netns for what the pods and the host send to UDP 9999.
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("drops need iptables (apt-get install iptables)")
	}
	if err := execInNetns(ns, "iptables", "-A", "OUTPUT", "-p", "udp", "--dport", "9999", "-j", "DROP"); err != nil {
		t.Fatal(err)
	}
	drops, err := client.Top(ctx, &isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DROPS, SinceStreamStart: true})
	if err != nil {
		t.Fatal(err)
	}
	const dropped = 23
	for _, cg := range []string{ctrC, host} {
		var u net.Conn
		if err := inCgroupNetns(t, filepath.Join(root, cg), ns, func() (err error) {
			u, err = net.Dial("udp", "127.0.0.1:9999")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		for range dropped {
			_, _ = u.Write(make([]byte, 64)) // EPERM: netfilter dropped it
		}
		u.Close()
	}
	f = waitFrame(t, drops, 50, func(f *isoobsv1.TopFrame) bool { return f.DropTotal.GetPackets() >= dropped })
	if len(f.DropRows) != 1 || f.DropRows[0].PodUid != uidClient || f.DropRows[0].Packets != dropped ||
		len(f.DropRows[0].Reasons) != 1 || f.DropRows[0].Reasons[0].Reason != "NETFILTER_DROP" || f.DropRows[0].Bytes != dropped*(64+28) {
		t.Errorf("drop rows: %v; want the client pod only, %d NETFILTER_DROP packets of 92 bytes", f.DropRows, dropped)
	}
	// Where: node-wide, so the host's drops are there too (no pod's, but the node's).
	f = waitFrame(t, drops, 50, func(f *isoobsv1.TopFrame) bool {
		for _, l := range f.DropLocations {
			if l.Reason == "NETFILTER_DROP" && l.Packets >= 2*dropped {
				return true
			}
		}
		return false
	})
	// Other drops of the node may be there too (a socket-less IPv6 multicast packet on lo was
	// seen): the NETFILTER_DROP ones are all at one function.
	var nf []*isoobsv1.DropLocationCount
	for _, l := range f.DropLocations {
		if l.Reason == "NETFILTER_DROP" {
			nf = append(nf, l)
		}
	}
	if len(nf) != 1 || nf[0].Packets != 2*dropped {
		t.Errorf("NETFILTER_DROP locations %v (all: %v), want one netfilter function with the pod's and the host's %d", nf, f.DropLocations, 2*dropped)
	}
}

// execInNetns runs a command inside ns (it inherits the thread's network namespace).
func execInNetns(ns netns.NsHandle, name string, args ...string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		return err
	}
	defer netns.Set(orig)
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %v: %v: %s", name, args, err, out)
	}
	return nil
}
