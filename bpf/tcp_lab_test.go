package bpf

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/isoobs/isoobs/cgroupv2"
)

// The TCP probe's lab tests reuse the DNS lab (lab_test.go): a client and a server network
// namespace joined by a veth pair, and cgroups of our own below a probe root. Ground truth is
// what the test itself did (connections, bytes) or the kernel's own counters in the netns.

func loadTCPLab(t *testing.T) (*lab, *TCPProbe) {
	t.Helper()
	l := newLab(t)
	p, err := LoadTCP(TCPOptions{CgroupRoot: l.base})
	if err != nil {
		t.Fatalf("LoadTCP: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return l, p
}

func tcpCountersOf(t *testing.T, p *TCPProbe, cgroupDir string) TCPCounters {
	t.Helper()
	id, err := cgroupv2.ID(cgroupDir)
	if err != nil {
		t.Fatal(err)
	}
	all, err := p.ReadTCP()
	if err != nil {
		t.Fatal(err)
	}
	return all[id]
}

// listenIn opens a TCP listener whose socket belongs to cgroupDir and the server netns.
func (l *lab) listenIn(cgroupDir string, port int) net.Listener {
	l.t.Helper()
	var ln net.Listener
	err := l.inCgroup(cgroupDir, l.serverNS, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(serverV4, uint16(port)).String())
		return err
	})
	if err != nil {
		l.t.Fatalf("listen: %v", err)
	}
	l.t.Cleanup(func() { ln.Close() })
	return ln
}

// dialFrom connects from a socket in cgroupDir and the client netns.
func (l *lab) dialFrom(cgroupDir string, port int) (net.Conn, error) {
	var c net.Conn
	err := l.inCgroup(cgroupDir, l.clientNS, func() (err error) {
		c, err = net.DialTimeout("tcp", netip.AddrPortFrom(serverV4, uint16(port)).String(), 5*time.Second)
		return err
	})
	return c, err
}

// inNetns runs fn on a thread in ns (processes fn starts inherit it).
func inNetns(ns netns.NsHandle, fn func() error) error {
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
	return fn()
}

// snmpTCP reads the Tcp: line of /proc/net/snmp as the kernel counts it in ns.
func snmpTCP(t *testing.T, ns netns.NsHandle) map[string]uint64 {
	t.Helper()
	return procNetCounters(t, ns, "snmp", "Tcp:")
}

// netstatTCPExt reads the TcpExt: line of /proc/net/netstat as the kernel counts it in ns.
func netstatTCPExt(t *testing.T, ns netns.NsHandle) map[string]uint64 {
	t.Helper()
	return procNetCounters(t, ns, "netstat", "TcpExt:")
}

// procNetCounters reads the counters of /proc/net/<file> whose lines start with prefix (a line
// of names, then a line of values) as the kernel counts them in ns.
func procNetCounters(t *testing.T, ns netns.NsHandle, file, prefix string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	err := inNetns(ns, func() error {
		f, err := os.Open("/proc/thread-self/net/" + file)
		if err != nil {
			return err
		}
		defer f.Close()
		var names []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) == 0 || fields[0] != prefix {
				continue
			}
			if names == nil {
				names = fields[1:]
				continue
			}
			for i, v := range fields[1:] {
				n, _ := strconv.ParseInt(v, 10, 64) // CurrEstab may be negative in theory
				out[names[i]] = uint64(n)
			}
		}
		return sc.Err()
	})
	if err != nil {
		t.Fatalf("read /proc/net/%s: %v", file, err)
	}
	return out
}

func TestTCPConnectRefusedExact(t *testing.T) {
	l, p := loadTCPLab(t)
	client := l.cgroup("refused-client")
	const closedPort, n = 9, 40
	for i := range n {
		c, err := l.dialFrom(client, closedPort)
		if err == nil {
			c.Close()
			t.Fatalf("connect %d to a closed port succeeded", i)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("connect %d: want ECONNREFUSED, got %v", i, err)
		}
	}
	// The same refused connects from this process's own cgroup, outside the probe's root: a
	// host process is never counted.
	for range n {
		if err := inNetns(l.clientNS, func() error {
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(serverV4, closedPort).String(), 5*time.Second)
			if err == nil {
				c.Close()
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	got := tcpCountersOf(t, p, client)
	if got.ConnectRefused != n || got.ActiveOpens != 0 || got.ResetsReceived != 0 || got.ConnectTimeout != 0 || got.ConnectOther != 0 {
		t.Errorf("client: refused %d opens %d resets received %d timeouts %d other %d; want refused %d and nothing else",
			got.ConnectRefused, got.ActiveOpens, got.ResetsReceived, got.ConnectTimeout, got.ConnectOther, n)
	}
	host, err := cgroupv2.ID(l.origCg)
	if err != nil {
		t.Fatal(err)
	}
	all, err := p.ReadTCP()
	if err != nil {
		t.Fatal(err)
	}
	if h, ok := all[host]; ok {
		t.Errorf("this process's cgroup %s, outside the probe root, was counted: %+v", l.origCg, h)
	}
	var total uint64
	for _, c := range all {
		total += c.ConnectRefused
	}
	if total != n {
		t.Errorf("refused connects over every cgroup = %d, want %d (only the client's)", total, n)
	}
	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// The server netns answered with RSTs from no socket: not a cgroup's.
	if st.ResetsNoSocket < 2*n {
		t.Errorf("resets sent without a socket = %d, want at least %d", st.ResetsNoSocket, 2*n)
	}
	t.Logf("client: %+v; probe: %+v", got, st)
}

// serveEcho accepts on ln; each connection's bytes are read to EOF and reply bytes written back.
func serveSink(ln net.Listener, reply int, received *sync.WaitGroup, total *uint64, mu *sync.Mutex) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer received.Done()
			defer c.Close()
			n, _ := io.Copy(io.Discard, c)
			mu.Lock()
			*total += uint64(n)
			mu.Unlock()
			_, _ = c.Write(make([]byte, reply))
		}()
	}
}

func TestTCPBytesPerPodExact(t *testing.T) {
	l, p := loadTCPLab(t)
	client, server := l.cgroup("bytes-client"), l.cgroup("bytes-server")
	ln := l.listenIn(server, 8080)
	const conns, reply = 8, 12_345
	sizes := []int{1, 1000, 65_536, 1 << 20, 3_000_001, 17, 100_000, 2 << 20}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var serverGot uint64
	wg.Add(conns)
	go serveSink(ln, reply, &wg, &serverGot, &mu)
	var sent, got uint64
	for i := range conns {
		c, err := l.dialFrom(client, 8080)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, sizes[i])
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
		sent += uint64(len(buf))
		c.(*net.TCPConn).CloseWrite()
		n, err := io.Copy(io.Discard, c)
		if err != nil {
			t.Fatal(err)
		}
		got += uint64(n)
		c.Close()
	}
	wg.Wait()
	if got != conns*reply || serverGot != sent {
		t.Fatalf("generator: client got %d of %d, server got %d of %d", got, conns*reply, serverGot, sent)
	}
	time.Sleep(100 * time.Millisecond) // the last FIN/ACKs
	c, s := tcpCountersOf(t, p, client), tcpCountersOf(t, p, server)
	// Sent bytes are exact. Received bytes are exact unless segments were retransmitted (a
	// loaded machine retransmits on a veth too): a retransmit that re-covers data the receiver
	// already holds out of order counts again, at most the sender's retransmitted bytes.
	if c.BytesOut != sent || s.BytesOut != got || !receivedWithin(s.BytesIn, sent, c.RetransBytes) || !receivedWithin(c.BytesIn, got, s.RetransBytes) {
		t.Errorf("bytes: client out %d in %d, server in %d out %d; the generator sent %d and replied %d (retransmitted bytes: client %d, server %d)",
			c.BytesOut, c.BytesIn, s.BytesIn, s.BytesOut, sent, got, c.RetransBytes, s.RetransBytes)
	}
	if c.ActiveOpens != conns || s.PassiveOpens != conns || c.PassiveOpens != 0 || s.ActiveOpens != 0 {
		t.Errorf("opens: client active %d passive %d, server active %d passive %d; want %d active and %d passive",
			c.ActiveOpens, c.PassiveOpens, s.ActiveOpens, s.PassiveOpens, conns, conns)
	}
	// RTT: every socket that sent data is sampled on its first data segment (then at most
	// every 100 ms), so each side has at least one sample per connection.
	for side, tc := range map[string]TCPCounters{"client": c, "server": s} {
		var rttSamples uint64
		for _, v := range tc.RTTLog2US {
			rttSamples += v
		}
		if rttSamples < conns {
			t.Errorf("%s: %d RTT samples for %d connections that sent data, want one each at least", side, rttSamples, conns)
		}
	}
	// Segments: the client's sockets are the only TCP senders in the client netns. Received
	// segments are the peer's, its retransmits included (nothing is lost on this link).
	snmp := snmpTCP(t, l.clientNS)
	if c.SegsOut != snmp["OutSegs"] {
		t.Errorf("client segments out %d; the kernel's OutSegs %d", c.SegsOut, snmp["OutSegs"])
	}
	if s.SegsIn != c.SegsOut+c.RetransSegs || c.SegsIn != s.SegsOut+s.RetransSegs {
		t.Errorf("segments: server received %d, client sent %d + %d again; client received %d, server sent %d + %d again",
			s.SegsIn, c.SegsOut, c.RetransSegs, c.SegsIn, s.SegsOut, s.RetransSegs)
	}
	t.Logf("client %+v\nserver %+v", c, s)
}

func TestTCPResetsExact(t *testing.T) {
	l, p := loadTCPLab(t)
	client, server := l.cgroup("rst-client"), l.cgroup("rst-server")
	ln := l.listenIn(server, 8081)
	const n = 25
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Linger 0: close sends a RST instead of a FIN.
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	for i := range n {
		c, err := l.dialFrom(client, 8081)
		if err == nil {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Read(make([]byte, 1))
			c.Close()
		} // else the RST came before connect returned: the same reset, seen earlier
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("connection %d: want ECONNRESET from the server, got %v", i, err)
		}
	}
	c, s := tcpCountersOf(t, p, client), tcpCountersOf(t, p, server)
	if s.ResetsSent != n || c.ResetsReceived != n || c.ResetsSent != 0 || s.ResetsReceived != 0 {
		t.Errorf("resets: server sent %d received %d, client sent %d received %d; want %d from server to client only",
			s.ResetsSent, s.ResetsReceived, c.ResetsSent, c.ResetsReceived, n)
	}
	if c.ActiveOpens != n || s.PassiveOpens != n {
		t.Errorf("opens: client %d server %d, want %d", c.ActiveOpens, s.PassiveOpens, n)
	}
	snmp := snmpTCP(t, l.serverNS)
	if s.ResetsSent != snmp["OutRsts"] {
		t.Errorf("server resets sent %d, the kernel's OutRsts in its netns %d", s.ResetsSent, snmp["OutRsts"])
	}
}

// dropRandomly makes the netns drop a share of the TCP segments it receives on port, as a
// lossy link would. (This kernel has no sch_netem, so the loss is an iptables statistic rule
// at INPUT: the sender sees plain loss, no local error.)
func dropRandomly(t *testing.T, ns netns.NsHandle, sport, dport int, probability string) {
	t.Helper()
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("needs iptables (apt-get install iptables)")
	}
	var args []string
	if sport != 0 {
		args = []string{"-A", "INPUT", "-p", "tcp", "--sport", strconv.Itoa(sport)}
	} else {
		args = []string{"-A", "INPUT", "-p", "tcp", "--dport", strconv.Itoa(dport)}
	}
	args = append(args, "-m", "statistic", "--mode", "random", "--probability", probability, "-j", "DROP")
	err := inNetns(ns, func() error {
		out, err := exec.Command("iptables", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestTCPRetransmitsMatchKernelCounters(t *testing.T) {
	l, p := loadTCPLab(t)
	client, server := l.cgroup("loss-client"), l.cgroup("loss-server")
	ln := l.listenIn(server, 8082)
	// Loss both ways: the client retransmits data, the server its replies.
	dropRandomly(t, l.serverNS, 0, 8082, "0.05")
	dropRandomly(t, l.clientNS, 8082, 0, "0.05")
	before := map[string]map[string]uint64{"client": snmpTCP(t, l.clientNS), "server": snmpTCP(t, l.serverNS)}
	const conns, size, reply = 4, 1 << 20, 256 << 10
	var wg sync.WaitGroup
	var mu sync.Mutex
	var serverGot uint64
	wg.Add(conns)
	go serveSink(ln, reply, &wg, &serverGot, &mu)
	var cwg sync.WaitGroup
	errc := make(chan error, conns)
	for range conns {
		c, err := l.dialFrom(client, 8082)
		if err != nil {
			t.Fatal(err)
		}
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			defer c.Close()
			if _, err := c.Write(make([]byte, size)); err != nil {
				errc <- err
				return
			}
			c.(*net.TCPConn).CloseWrite()
			if n, err := io.Copy(io.Discard, c); err != nil || n != reply {
				errc <- fmt.Errorf("reply: %d bytes, %v", n, err)
			}
		}()
	}
	cwg.Wait()
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	// Let FIN retransmits (if a FIN was dropped) finish before comparing.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, s := tcpCountersOf(t, p, client), tcpCountersOf(t, p, server)
		after := map[string]map[string]uint64{"client": snmpTCP(t, l.clientNS), "server": snmpTCP(t, l.serverNS)}
		kc := after["client"]["RetransSegs"] - before["client"]["RetransSegs"]
		ks := after["server"]["RetransSegs"] - before["server"]["RetransSegs"]
		if (c.RetransSegs == kc && s.RetransSegs == ks && after["client"]["CurrEstab"] == 0) || time.Now().After(deadline) {
			if c.RetransSegs != kc || s.RetransSegs != ks {
				t.Errorf("retransmitted segments: client %d server %d; the kernel's RetransSegs in their netns: %d and %d", c.RetransSegs, s.RetransSegs, kc, ks)
			}
			// The rule drops whole GRO packets at random, so one side may lose nothing in a run.
			if kc+ks == 0 {
				t.Errorf("nothing retransmitted: the loss rule did not work")
			}
			t.Logf("retransmitted segments: client %d = kernel %d, server %d = kernel %d", c.RetransSegs, kc, s.RetransSegs, ks)
			// Bytes sent stay what the generator sent, each byte once, however often it was sent.
			if c.BytesOut != conns*size || s.BytesOut != conns*reply {
				t.Errorf("bytes sent on a lossy link: client %d, server %d; the generator sent %d and replied %d", c.BytesOut, s.BytesOut, conns*size, conns*reply)
			}
			// Bytes received are exact unless a retransmit re-covers data the receiver already
			// held out of order (a sender collapsing segments after a loss): then those bytes
			// count twice, at most the sender's retransmitted bytes.
			for _, b := range []struct {
				who            string
				got, want, ret uint64
			}{{"server", s.BytesIn, conns * size, c.RetransBytes}, {"client", c.BytesIn, conns * reply, s.RetransBytes}} {
				if !receivedWithin(b.got, b.want, b.ret) {
					t.Errorf("bytes received on a lossy link by the %s: %d, want %d (at most the sender's %d retransmitted bytes more)", b.who, b.got, b.want, b.ret)
				} else if b.got != b.want {
					t.Logf("bytes received by the %s: %d, %d more than sent (re-covered out-of-order data)", b.who, b.got, b.got-b.want)
				}
			}
			if c.RetransSegs > 0 && c.RetransBytes == 0 {
				t.Errorf("no retransmitted bytes counted for %d retransmitted segments", c.RetransSegs)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestTCPConnectTimeoutsExact: 6 connects whose SYNs the server's netns drops time out in the
// kernel: exactly 6 timeouts, and the SYN retransmits equal the netns's RetransSegs (12).
//
// The kernel does not run a tracepoint program that is already running on the CPU (a timer
// softirq interrupting it in a process's state change; the six timeouts expire in one timer
// run, so they are skipped together) and counts it (recursion_misses, which the probe reports as
// TCPStats.ProgramsNotRun): an attempt whose counts are off while the probe's programs were not
// run is made again, at most 3 times; counts off without that fail.
func TestTCPConnectTimeoutsExact(t *testing.T) {
	for attempt := 1; ; attempt++ {
		problems, notRun := connectTimeoutsOnce(t)
		if len(problems) == 0 {
			return
		}
		if notRun == 0 || attempt == 3 {
			for _, p := range problems {
				t.Error(p)
			}
			t.Logf("attempt %d; the kernel skipped the probe's programs %d times", attempt, notRun)
			return
		}
		t.Logf("attempt %d: %v, while the kernel skipped the probe's programs %d times (counted in its status): again", attempt, problems, notRun)
	}
}

func connectTimeoutsOnce(t *testing.T) (problems []string, notRun uint64) {
	l, p := loadTCPLab(t)
	client := l.cgroup("timeout-client")
	// One SYN retransmit (1 s + 2 s) instead of six (127 s) before the kernel gives up, and a
	// server netns that drops the SYNs: the connects time out in the kernel, not in Go.
	setSynRetries(t, l.clientNS, 1)
	dropRandomly(t, l.serverNS, 0, 8083, "1")
	const n = 6
	errs := l.connectAll(t, client, netip.AddrPortFrom(serverV4, 8083), n)
	for i, err := range errs {
		if !errors.Is(err, syscall.ETIMEDOUT) {
			t.Fatalf("connect %d: want ETIMEDOUT from the kernel, got %v", i, err)
		}
	}
	got := tcpCountersOf(t, p, client)
	if got.ConnectTimeout != n || got.ConnectRefused != 0 || got.ActiveOpens != 0 || got.ConnectOther != 0 {
		problems = append(problems, fmt.Sprintf("client: timeouts %d refused %d opens %d other %d; want %d timeouts only", got.ConnectTimeout, got.ConnectRefused, got.ActiveOpens, got.ConnectOther, n))
	}
	// The SYNs sent again are retransmits, as the kernel counts them in the netns.
	snmp := snmpTCP(t, l.clientNS)
	if got.RetransSegs != snmp["RetransSegs"] || got.RetransSegs < n {
		problems = append(problems, fmt.Sprintf("SYN retransmits %d; the kernel's RetransSegs %d (at least one per connect)", got.RetransSegs, snmp["RetransSegs"]))
	}
	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d connects timed out, %d SYN retransmits = the kernel's %d; the probe's programs not run (recursion) %d", got.ConnectTimeout, got.RetransSegs, snmp["RetransSegs"], st.ProgramsNotRun)
	if len(problems) > 0 {
		// Where the missing events went, if anywhere (another cgroup, or late): a rare failure
		// (2 in 30 runs while other benchmarks loaded the machine, none in 120 without) is not
		// explained yet.
		all, _ := p.ReadTCP()
		cid, _ := cgroupv2.ID(client)
		for id, c := range all {
			t.Logf("cgroup %d (the client: %v): %+v", id, id == cid, c)
		}
		time.Sleep(time.Second)
		again := tcpCountersOf(t, p, client)
		t.Logf("a second later: timeouts %d, retransmits %d; the netns's %v; probe %+v", again.ConnectTimeout, again.RetransSegs, snmpTCP(t, l.clientNS), st)
	}
	return problems, st.ProgramsNotRun
}

// TestTCPRetransmitsDroppedByQdiscCounted: a retransmit the kernel counts (TcpRetransSegs) and
// then loses on the way out (the device or its qdisc drops it: a full veth backlog on a busy
// node, here a pfifo of length 0) is a retransmit for us too. Three connects whose SYNs
// the client's own qdisc drops time out after four SYN retransmits each (a send dropped
// locally is tried again every 500 ms): 12 retransmits (the probe counted 0 before), the
// kernel's, all of them failed (TCPRetransFail).
func TestTCPRetransmitsDroppedByQdiscCounted(t *testing.T) {
	if _, err := exec.LookPath("tc"); err != nil {
		t.Skip("needs tc (apt-get install iproute2)")
	}
	l, p := loadTCPLab(t)
	client := l.cgroup("qdisc-client")
	setSynRetries(t, l.clientNS, 1)
	// A qdisc that holds nothing (pfifo, limit 0) on the client's veth, and the server's
	// address resolved for good, so no ARP has to pass it.
	vsrv, err := netlink.NewHandleAt(l.serverNS)
	if err != nil {
		t.Fatal(err)
	}
	defer vsrv.Close()
	link, err := vsrv.LinkByName("vsrv")
	if err != nil {
		t.Fatal(err)
	}
	mac := link.Attrs().HardwareAddr.String()
	err = inNetns(l.clientNS, func() error {
		for _, args := range [][]string{
			{"ip", "neigh", "replace", serverV4.String(), "lladdr", mac, "nud", "permanent", "dev", "vcli"},
			{"tc", "qdisc", "replace", "dev", "vcli", "root", "pfifo", "limit", "0"},
		} {
			if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
				return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	const n = 3
	for i, err := range l.connectAll(t, client, netip.AddrPortFrom(serverV4, 8084), n) {
		if !errors.Is(err, syscall.ETIMEDOUT) {
			t.Fatalf("connect %d: want ETIMEDOUT from the kernel, got %v", i, err)
		}
	}
	got := tcpCountersOf(t, p, client)
	snmp, ext := snmpTCP(t, l.clientNS), netstatTCPExt(t, l.clientNS)
	t.Logf("%d connects timed out, %d SYN retransmits; the kernel's RetransSegs %d, TCPRetransFail %d, TCPSynRetrans %d", got.ConnectTimeout, got.RetransSegs, snmp["RetransSegs"], ext["TCPRetransFail"], ext["TCPSynRetrans"])
	if got.ConnectTimeout != n || got.RetransSegs != snmp["RetransSegs"] || ext["TCPRetransFail"] != snmp["RetransSegs"] || got.RetransSegs < n {
		t.Errorf("timeouts %d, retransmits %d; want %d and the kernel's %d (all failed: %d)", got.ConnectTimeout, got.RetransSegs, n, snmp["RetransSegs"], ext["TCPRetransFail"])
	}
}

// setSynRetries sets net.ipv4.tcp_syn_retries in ns.
func setSynRetries(t *testing.T, ns netns.NsHandle, n int) {
	t.Helper()
	err := inNetns(ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/tcp_syn_retries", []byte(strconv.Itoa(n)), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// connectAll opens n non-blocking TCP connects to dst from the client netns, every socket
// created in one stay of this process in cgroupDir (so each belongs to it, whatever the load:
// sockets made from several goroutines each moving the process in and back could be made
// after another's move back), and returns each connect's result once it finished (nil:
// connected), waiting up to 30 s.
func (l *lab) connectAll(t *testing.T, cgroupDir string, dst netip.AddrPort, n int) []error {
	t.Helper()
	family, sa := unix.AF_INET, unix.Sockaddr(&unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()})
	if dst.Addr().Is6() {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(dst.Port()), Addr: dst.Addr().As16()}
	}
	fds := make([]int, 0, n)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	err := l.inCgroup(cgroupDir, l.clientNS, func() error {
		for range n {
			fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			fds = append(fds, fd)
			if err := unix.Connect(fd, sa); !errors.Is(err, unix.EINPROGRESS) {
				return fmt.Errorf("connect: %v, want EINPROGRESS", err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	errs := make([]error, n)
	deadline := time.Now().Add(30 * time.Second)
	for i, fd := range fds {
		for {
			left := time.Until(deadline)
			if left <= 0 {
				t.Fatalf("connect %d still in progress after 30 s", i)
			}
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			if _, err := unix.Poll(pfd, int(left.Milliseconds())+1); err != nil && !errors.Is(err, unix.EINTR) {
				t.Fatal(err)
			}
			if pfd[0].Revents != 0 {
				break
			}
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			t.Fatal(err)
		}
		if soErr != 0 {
			errs[i] = syscall.Errno(soErr)
		}
	}
	return errs
}

// receivedWithin: bytes counted on the receiving side are what was sent, plus at most what the
// sender retransmitted (re-covered out-of-order data counts again).
func receivedWithin(got, sent, retransmitted uint64) bool {
	return got >= sent && got <= sent+retransmitted
}

// TestTCPCgroupSlotsCountExactly: with one fast-path slot, a client and a server pod share
// it: the first read gives it to one of them, the other stays in the hash, and each pod's
// bytes and opens stay exact across the move; when the owner is deleted (its counts are
// forgotten, later traffic counts from zero), the slot goes to the other pod a read later.
func TestTCPCgroupSlotsCountExactly(t *testing.T) {
	l := newLab(t)
	p, err := LoadTCP(TCPOptions{CgroupRoot: l.base, CgroupSlots: 1})
	if err != nil {
		t.Fatalf("LoadTCP: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	client, server := l.cgroup("slot-client"), l.cgroup("slot-server")
	clientID, _ := cgroupv2.ID(client)
	serverID, _ := cgroupv2.ID(server)
	ln := l.listenIn(server, 8085)
	const reply = 777
	var wg sync.WaitGroup
	var mu sync.Mutex
	var serverGot uint64
	go serveSink(ln, reply, &wg, &serverGot, &mu)
	// What the generator made each pod send, and the connections, since the pod was last deleted.
	type want struct{ bytes, conns uint64 }
	wants := map[uint64]*want{clientID: {}, serverID: {}}
	exchange := func(n int) {
		t.Helper()
		wg.Add(1)
		c, err := l.dialFrom(client, 8085)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		got, err := io.Copy(io.Discard, c)
		if err != nil || got != reply {
			t.Fatalf("reply: %d bytes, %v", got, err)
		}
		c.Close()
		wg.Wait()
		wants[clientID].bytes += uint64(n)
		wants[serverID].bytes += reply
		wants[clientID].conns++
		wants[serverID].conns++
		time.Sleep(50 * time.Millisecond) // the last FIN/ACKs
	}
	check := func(step string) {
		t.Helper()
		all, err := p.ReadTCP()
		if err != nil {
			t.Fatal(err)
		}
		c, s := all[clientID], all[serverID]
		if w := wants[clientID]; c.BytesOut != w.bytes || c.ActiveOpens != w.conns {
			t.Errorf("%s: client sent %d bytes in %d connections; the generator %d in %d", step, c.BytesOut, c.ActiveOpens, w.bytes, w.conns)
		}
		if w := wants[serverID]; s.BytesOut != w.bytes || s.PassiveOpens != w.conns {
			t.Errorf("%s: server sent %d bytes in %d connections; the generator %d in %d", step, s.BytesOut, s.PassiveOpens, w.bytes, w.conns)
		}
	}
	owner := func() uint64 {
		p.slotMu.Lock()
		defer p.slotMu.Unlock()
		return p.slotOwner[0]
	}
	exchange(100_000)
	check("before any slot")
	first := owner()
	other := map[uint64]uint64{clientID: serverID, serverID: clientID}[first]
	if other == 0 {
		t.Fatalf("slot 0 owned by %d after the first read; want the client (%d) or the server (%d)", first, clientID, serverID)
	}
	exchange(1 << 20)
	exchange(3)
	// The kernel counted these in the slot, not in the hash: the fast path is taken.
	slotBefore := slotBytesOut(t, p, 0)
	exchange(7000)
	if w := map[uint64]uint64{clientID: 7000, serverID: reply}[first]; slotBytesOut(t, p, 0)-slotBefore != w {
		t.Errorf("slot 0 counted %d bytes out of the last exchange, want its owner's %d", slotBytesOut(t, p, 0)-slotBefore, w)
	}
	check("one pod in the slot")
	if st, err := p.Stats(); err != nil || st.CgroupSlots != (MapFill{Entries: 1, Max: 1}) {
		t.Fatalf("slot fill %+v (%v), want 1 of 1", st.CgroupSlots, err)
	}
	if err := p.DeleteCgroups([]uint64{first}); err != nil {
		t.Fatal(err)
	}
	*wants[first] = want{}
	check("owner deleted, slot cooling")
	if o := owner(); o != 0 {
		t.Fatalf("slot given to %d in the read right after it was freed", o)
	}
	check("slot free")
	if o := owner(); o != other {
		t.Fatalf("slot owned by %d, want the other pod %d", o, other)
	}
	exchange(5000)
	check("the other pod in the slot")
	t.Logf("slot owners: %d, then %d; counts exact at every read", first, other)
}

// slotBytesOut is what slot i of tcp_cgroup_slots holds as bytes sent, summed over CPUs.
func slotBytesOut(t *testing.T, p *TCPProbe, i int) uint64 {
	t.Helper()
	p.slotMu.Lock()
	defer p.slotMu.Unlock()
	perCPU, err := p.slots.counters(i, nil)
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range perCPU {
		n += c.BytesOut
	}
	return n
}
