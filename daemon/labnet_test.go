package daemon_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/dns/dnsmessage"
)

// The helpers below build the integration test's world: kubelet-named cgroups under a temporary
// root, a network namespace behind a veth pair holding a small DNS server, and DNS clients that
// run as child processes started directly inside a given cgroup.

// makeCgroups creates dirs (relative to root, outermost first) and removes them on cleanup,
// killing whatever still runs inside.
func makeCgroups(t *testing.T, root string, dirs ...string) {
	t.Helper()
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatalf("create test cgroup root %s: %v", root, err)
	}
	created := []string{root}
	t.Cleanup(func() {
		for i := len(created) - 1; i >= 0; i-- {
			removeCgroup(created[i])
		}
	})
	for _, d := range dirs {
		p := filepath.Join(root, d)
		parts := strings.Split(d, "/")
		for i := range parts {
			q := filepath.Join(root, filepath.Join(parts[:i+1]...))
			if err := os.Mkdir(q, 0o755); err == nil {
				created = append(created, q)
			} else if !errors.Is(err, os.ErrExist) {
				t.Fatalf("create cgroup %s: %v", q, err)
			}
		}
		_ = p
	}
}

func removeCgroup(dir string) {
	for range 50 {
		if b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serverNet is a network namespace reachable through a veth pair, with a DNS server inside.
type serverNet struct {
	hostIP, serverIP netip.Addr
	ns               netns.NsHandle
	conn             *net.UDPConn
	wg               sync.WaitGroup
}

// DNS server behaviour, by the first label of the query name.
const (
	nxPrefix    = "nx-"   // NXDOMAIN
	failPrefix  = "fail-" // SERVFAIL
	slowPrefix  = "slow-" // answered after slowDelay
	slowDelay   = 20 * time.Millisecond
	serverDelay = 0
)

func newServerNet(t *testing.T) *serverNet {
	t.Helper()
	// A /30 per test process so parallel runs on one machine do not collide.
	n := os.Getpid() % 16000
	base := netip.AddrFrom4([4]byte{10, 213, byte(n >> 6), byte((n & 63) << 2)})
	s := &serverNet{hostIP: base.Next(), serverIP: base.Next().Next()}
	hostName := fmt.Sprintf("iodt%dh", os.Getpid()%100000)
	peerName := fmt.Sprintf("iodt%dp", os.Getpid()%100000)

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("current netns: %v", err)
	}
	defer orig.Close()
	ns, err := netns.New() // also switches this thread into it
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	s.ns = ns
	t.Cleanup(func() { ns.Close() })
	if err := netns.Set(orig); err != nil {
		t.Fatalf("back to original netns: %v", err)
	}

	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName}, PeerName: peerName}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("create veth %s: %v", hostName, err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(hostName); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	peer, err := netlink.LinkByName(peerName)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetNsFd(peer, int(ns)); err != nil {
		t.Fatalf("move %s into netns: %v", peerName, err)
	}
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: &net.IPNet{IP: s.hostIP.AsSlice(), Mask: net.CIDRMask(30, 32)}}); err != nil {
		t.Fatalf("address %s: %v", hostName, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	inPeer, err := h.LinkByName(peerName)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(inPeer, &netlink.Addr{IPNet: &net.IPNet{IP: s.serverIP.AsSlice(), Mask: net.CIDRMask(30, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(inPeer); err != nil {
		t.Fatal(err)
	}
	if lo, err := h.LinkByName("lo"); err == nil {
		_ = h.LinkSetUp(lo)
	}

	// The socket belongs to the namespace it was created in, whatever thread serves it later.
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: s.serverIP.AsSlice(), Port: 53})
	if err2 := netns.Set(orig); err2 != nil {
		t.Fatal(err2)
	}
	if err != nil {
		t.Fatalf("dns server listen: %v", err)
	}
	s.conn = conn
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() {
		conn.Close()
		s.wg.Wait()
	})
	return s
}

func (s *serverNet) serve() {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		name := q.Name.String()
		rcode := dnsmessage.RCodeSuccess
		var delay time.Duration
		switch {
		case strings.HasPrefix(name, nxPrefix):
			rcode = dnsmessage.RCodeNameError
		case strings.HasPrefix(name, failPrefix):
			rcode = dnsmessage.RCodeServerFailure
		case strings.HasPrefix(name, slowPrefix):
			delay = slowDelay
		}
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: rcode})
		_ = b.StartQuestions()
		_ = b.Question(q)
		if rcode == dnsmessage.RCodeSuccess && q.Type == dnsmessage.TypeA {
			_ = b.StartAnswers()
			_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}, dnsmessage.AResource{A: [4]byte{192, 0, 2, 1}})
		}
		msg, err := b.Finish()
		if err != nil {
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			time.Sleep(delay)
			_, _ = s.conn.WriteToUDPAddrPort(msg, from)
		}()
	}
}

// clientSpec is what one client process sends: count queries for each name, sequentially.
type clientSpec struct {
	Server string        `json:"server"`
	Names  []clientQuery `json:"names"`
}

type clientQuery struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

// clientResult is what the client measured.
type clientResult struct {
	Rcodes map[string]int `json:"rcodes"`
	// LatenciesUS per name, sorted.
	LatenciesUS map[string][]int64 `json:"latencies_us"`
	Timeouts    int                `json:"timeouts"`
}

const clientEnv = "ISOOBS_DAEMON_TEST_DNS_CLIENT"

// runDNSClient is the child process body: send the queries, print the result as JSON.
func runDNSClient(specJSON string) {
	var spec clientSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "bad spec:", err)
		os.Exit(2)
	}
	conn, err := net.Dial("udp4", spec.Server)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(2)
	}
	res := clientResult{Rcodes: map[string]int{}, LatenciesUS: map[string][]int64{}}
	id := uint16(1)
	buf := make([]byte, 1500)
	for _, nq := range spec.Names {
		for range nq.Count {
			id++
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
			_ = b.StartQuestions()
			_ = b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(nq.Name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
			msg, _ := b.Finish()
			start := time.Now()
			if _, err := conn.Write(msg); err != nil {
				fmt.Fprintln(os.Stderr, "write:", err)
				os.Exit(2)
			}
			_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			for {
				n, err := conn.Read(buf)
				if err != nil {
					res.Timeouts++
					break
				}
				var p dnsmessage.Parser
				h, err := p.Start(buf[:n])
				if err != nil || h.ID != id {
					continue
				}
				res.LatenciesUS[nq.Name] = append(res.LatenciesUS[nq.Name], time.Since(start).Microseconds())
				res.Rcodes[h.RCode.String()]++
				break
			}
		}
	}
	for _, l := range res.LatenciesUS {
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	os.Exit(0)
}

// runClientIn starts the test binary as a DNS client placed directly in cgroup dir
// (CLONE_INTO_CGROUP), waits for it and returns what it measured.
func runClientIn(t *testing.T, cgroupDir string, spec clientSpec) clientResult {
	t.Helper()
	fd, err := syscall.Open(cgroupDir, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatalf("open cgroup %s: %v", cgroupDir, err)
	}
	defer syscall.Close(fd)
	js, _ := json.Marshal(spec)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), clientEnv+"="+string(js))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd, Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dns client in %s: %v\n%s", cgroupDir, err, stderr.String())
	}
	var res clientResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("dns client output %q: %v", out, err)
	}
	if res.Timeouts != 0 {
		t.Fatalf("dns client in %s: %d queries timed out", cgroupDir, res.Timeouts)
	}
	return res
}
