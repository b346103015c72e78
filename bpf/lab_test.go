package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"github.com/isoobs/isoobs/cgroupv2"
	"github.com/isoobs/isoobs/testlab/needroot"
)

// Test lab: a cgroup v2 subtree of our own, a client and a server network
// namespace joined by a veth pair, and a tiny DNS server in Go. Sockets are
// attributed to a cgroup when they are created, so a helper moves this
// process into a cgroup (and the thread into a netns) just for the socket()
// call, then moves it back.

var (
	clientV4 = netip.MustParseAddr("192.0.2.1") // TEST-NET-1, only inside our netns
	serverV4 = netip.MustParseAddr("192.0.2.2")
	clientV6 = netip.MustParseAddr("2001:db8::1") // documentation prefix, only inside our netns
	serverV6 = netip.MustParseAddr("2001:db8::2")
)

type lab struct {
	t         testing.TB
	mount     string // cgroup v2 mount
	base      string // our cgroup subtree
	origCg    string // where this process lives
	clientNS  netns.NsHandle
	serverNS  netns.NsHandle
	server    *dnsServer
	cgroupsMu sync.Mutex
	cgroups   []string
}

var labSeq atomic.Int32

func newLab(t testing.TB) *lab {
	t.Helper()
	needroot.Require(t, "loads eBPF, creates netns/cgroups")
	mount, err := cgroupv2.Mount()
	if err != nil {
		t.Fatal(err)
	}
	l := &lab{t: t, mount: mount, origCg: ownCgroup(t, mount)}
	l.base = filepath.Join(mount, fmt.Sprintf("isoobs-bpftest-%d-%d", os.Getpid(), labSeq.Add(1)))
	if err := os.Mkdir(l.base, 0o755); err != nil {
		t.Fatal(err)
	}
	l.cgroups = append(l.cgroups, l.base)
	t.Cleanup(l.cleanupCgroups)
	l.setupNetns()
	return l
}

// ownCgroup returns this process's cgroup v2 directory.
func ownCgroup(t testing.TB, mount string) string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(mount, rest)
		}
	}
	t.Fatal("no cgroup v2 entry in /proc/self/cgroup")
	return ""
}

// cgroup creates base/rel (parents first) and returns its path.
func (l *lab) cgroup(rel string) string {
	l.t.Helper()
	dir := l.base
	for _, part := range strings.Split(rel, "/") {
		dir = filepath.Join(dir, part)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			l.t.Fatal(err)
		} else if err == nil {
			l.cgroupsMu.Lock()
			l.cgroups = append(l.cgroups, dir)
			l.cgroupsMu.Unlock()
		}
	}
	return dir
}

func (l *lab) cleanupCgroups() {
	moveProcess(l.origCg) // in case a test failed inside inCgroup
	for i := len(l.cgroups) - 1; i >= 0; i-- {
		// A cgroup whose sockets were just closed can be busy for a moment.
		var err error
		for try := 0; try < 50; try++ {
			if err = os.Remove(l.cgroups[i]); err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			l.t.Errorf("remove cgroup %s: %v", l.cgroups[i], err)
		}
	}
}

func moveProcess(cgroupDir string) error {
	return os.WriteFile(filepath.Join(cgroupDir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644)
}

// inCgroup runs fn with this process in cgroupDir and the calling thread in
// ns: sockets fn creates belong to both.
func (l *lab) inCgroup(cgroupDir string, ns netns.NsHandle, fn func() error) error {
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
	if err := moveProcess(cgroupDir); err != nil {
		return fmt.Errorf("join cgroup %s: %w", cgroupDir, err)
	}
	defer moveProcess(l.origCg)
	return fn()
}

func (l *lab) setupNetns() {
	t := l.t
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	defer netns.Set(orig)
	if l.clientNS, err = netns.New(); err != nil {
		t.Fatal(err)
	}
	if l.serverNS, err = netns.New(); err != nil {
		t.Fatal(err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l.server != nil {
			l.server.close()
		}
		l.clientNS.Close()
		l.serverNS.Close()
	})
	setup := func(ns netns.NsHandle, ifName string, v4, v6 netip.Addr, create bool) {
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		if create {
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vcli"}, PeerName: "vsrv", PeerNamespace: netlink.NsFd(int(l.serverNS))}
			if err := h.LinkAdd(veth); err != nil {
				t.Fatalf("create veth: %v", err)
			}
		}
		for _, name := range []string{"lo", ifName} {
			link, err := h.LinkByName(name)
			if err != nil {
				t.Fatal(err)
			}
			if name != "lo" {
				for _, a := range []netip.Addr{v4, v6} {
					bits := 24
					if a.Is6() {
						bits = 64
					}
					addr := &netlink.Addr{IPNet: netipPrefix(a, bits), Flags: unix.IFA_F_NODAD}
					if err := h.AddrAdd(link, addr); err != nil {
						t.Fatalf("add %s: %v", a, err)
					}
				}
			}
			if err := h.LinkSetUp(link); err != nil {
				t.Fatal(err)
			}
		}
		// No TCP timestamps: data segments then carry a 20-byte TCP header
		// and the expected byte counts are exact.
		if err := netns.Set(ns); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("/proc/sys/net/ipv4/tcp_timestamps", []byte("0"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := netns.Set(orig); err != nil {
			t.Fatal(err)
		}
	}
	setup(l.clientNS, "vcli", clientV4, clientV6, true)
	setup(l.serverNS, "vsrv", serverV4, serverV6, false)
}

func netipPrefix(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}
}

// startServer starts the DNS server in the server netns, its sockets in
// cgroupDir (which may lie outside any probe root).
func (l *lab) startServer(cgroupDir string) *dnsServer {
	l.t.Helper()
	s := &dnsServer{}
	err := l.inCgroup(cgroupDir, l.serverNS, func() error {
		for _, a := range []netip.Addr{serverV4, serverV6} {
			pc, err := net.ListenPacket("udp", netip.AddrPortFrom(a, 53).String())
			if err != nil {
				return err
			}
			s.udp = append(s.udp, pc)
			ln, err := net.Listen("tcp", netip.AddrPortFrom(a, 53).String())
			if err != nil {
				return err
			}
			s.tcp = append(s.tcp, ln)
		}
		return nil
	})
	if err != nil {
		s.close()
		l.t.Fatalf("start dns server: %v", err)
	}
	for _, pc := range s.udp {
		s.wg.Add(1)
		go s.serveUDP(pc)
	}
	for _, ln := range s.tcp {
		s.wg.Add(1)
		go s.serveTCP(ln)
	}
	l.server = s
	return s
}

// dnsServer answers every question; the rcode follows the first label's
// prefix: "nx-" NXDOMAIN, "sf-" SERVFAIL, "rf-" REFUSED, "fe-" FORMERR,
// anything else NOERROR. delayNS delays every answer.
type dnsServer struct {
	udp     []net.PacketConn
	tcp     []net.Listener
	delayNS atomic.Int64
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
	closed  bool
}

func rcodeFor(name string) dnsmessage.RCode {
	switch {
	case strings.HasPrefix(name, "nx-"):
		return dnsmessage.RCodeNameError
	case strings.HasPrefix(name, "sf-"):
		return dnsmessage.RCodeServerFailure
	case strings.HasPrefix(name, "rf-"):
		return dnsmessage.RCodeRefused
	case strings.HasPrefix(name, "fe-"):
		return dnsmessage.RCodeFormatError
	}
	return dnsmessage.RCodeSuccess
}

func rcodeSlot(rc dnsmessage.RCode) int {
	switch rc {
	case dnsmessage.RCodeSuccess:
		return RcodeNoError
	case dnsmessage.RCodeNameError:
		return RcodeNXDomain
	case dnsmessage.RCodeServerFailure:
		return RcodeServFail
	case dnsmessage.RCodeRefused:
		return RcodeRefused
	}
	return RcodeOther
}

func (s *dnsServer) answer(query []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	if d := s.delayNS.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, RecursionDesired: h.RecursionDesired,
		RecursionAvailable: true, RCode: rcodeFor(strings.ToLower(q.Name.String()))})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, false
	}
	if err := b.Question(q); err != nil {
		return nil, false
	}
	msg, err := b.Finish()
	return msg, err == nil
}

func (s *dnsServer) serveUDP(pc net.PacketConn) {
	defer s.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp, ok := s.answer(buf[:n]); ok {
			pc.WriteTo(resp, from)
		}
	}
}

func (s *dnsServer) serveTCP(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			for {
				msg, err := readTCPMessage(c)
				if err != nil {
					return
				}
				if resp, ok := s.answer(msg); ok {
					if _, err := c.Write(tcpFrame(resp)); err != nil {
						return
					}
				}
			}
		}()
	}
}

func (s *dnsServer) close() {
	s.mu.Lock()
	s.closed = true
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	for _, pc := range s.udp {
		pc.Close()
	}
	for _, ln := range s.tcp {
		ln.Close()
	}
	s.wg.Wait()
}

func tcpFrame(msg []byte) []byte {
	out := make([]byte, 2+len(msg))
	binary.BigEndian.PutUint16(out, uint16(len(msg)))
	copy(out[2:], msg)
	return out
}

func readTCPMessage(r io.Reader) ([]byte, error) {
	var pfx [2]byte
	if _, err := io.ReadFull(r, pfx[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, binary.BigEndian.Uint16(pfx[:]))
	_, err := io.ReadFull(r, msg)
	return msg, err
}

func buildQuery(id uint16, name string, qtype dnsmessage.Type) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	if err := b.StartQuestions(); err != nil {
		panic(err)
	}
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: qtype, Class: dnsmessage.ClassINET}); err != nil {
		panic(err)
	}
	msg, err := b.Finish()
	if err != nil {
		panic(err)
	}
	return msg
}

// dnsClient is one socket of a "pod": UDP or a TCP connection.
type dnsClient struct {
	conn  net.Conn
	tcp   bool
	v6    bool
	nextI uint16
	// Ground truth of what went over the wire.
	bytesOut, bytesIn uint64
}

func (l *lab) dial(cgroupDir string, tcp, v6 bool) *dnsClient {
	l.t.Helper()
	c := &dnsClient{tcp: tcp, v6: v6, nextI: 1}
	network, server := "udp", serverV4
	if tcp {
		network = "tcp"
	}
	if v6 {
		server = serverV6
	}
	err := l.inCgroup(cgroupDir, l.clientNS, func() error {
		var err error
		c.conn, err = net.DialTimeout(network, netip.AddrPortFrom(server, 53).String(), 2*time.Second)
		return err
	})
	if err != nil {
		l.t.Fatalf("dial %s %s from %s: %v", network, server, cgroupDir, err)
	}
	l.t.Cleanup(func() { c.conn.Close() })
	return c
}

// ipOverhead is the IP + transport header size of one DNS packet (+ the TCP
// length prefix), with TCP timestamps off.
func (c *dnsClient) ipOverhead() uint64 {
	ip := uint64(20)
	if c.v6 {
		ip = 40
	}
	if c.tcp {
		return ip + 20 + 2
	}
	return ip + 8
}

// query sends one query and waits for its answer; it returns the rcode and
// the client-measured latency.
func (c *dnsClient) query(name string, qtype dnsmessage.Type) (dnsmessage.RCode, time.Duration, error) {
	id := c.nextI
	c.nextI++
	msg := buildQuery(id, name, qtype)
	c.conn.SetDeadline(time.Now().Add(3 * time.Second))
	start := time.Now()
	var resp []byte
	var err error
	if c.tcp {
		if _, err = c.conn.Write(tcpFrame(msg)); err != nil {
			return 0, 0, err
		}
		resp, err = readTCPMessage(c.conn)
	} else {
		if _, err = c.conn.Write(msg); err != nil {
			return 0, 0, err
		}
		buf := make([]byte, 65536)
		var n int
		n, err = c.conn.Read(buf)
		resp = buf[:n]
	}
	elapsed := time.Since(start)
	if err != nil {
		return 0, 0, err
	}
	var p dnsmessage.Parser
	h, err := p.Start(resp)
	if err != nil {
		return 0, 0, err
	}
	if h.ID != id {
		return 0, 0, fmt.Errorf("response id %d, want %d", h.ID, id)
	}
	c.bytesOut += c.ipOverhead() + uint64(len(msg))
	c.bytesIn += c.ipOverhead() + uint64(len(resp))
	return h.RCode, elapsed, nil
}
