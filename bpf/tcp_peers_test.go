package bpf

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/isoobs/isoobs/cgroupv2"
)

// listenAt opens a TCP listener at addr whose socket belongs to cgroupDir and the server netns.
func (l *lab) listenAt(cgroupDir string, addr netip.AddrPort) net.Listener {
	l.t.Helper()
	var ln net.Listener
	err := l.inCgroup(cgroupDir, l.serverNS, func() (err error) {
		ln, err = net.Listen("tcp", addr.String())
		return err
	})
	if err != nil {
		l.t.Fatalf("listen %s: %v", addr, err)
	}
	l.t.Cleanup(func() { ln.Close() })
	return ln
}

// dialAt connects to addr from a socket in cgroupDir and the client netns.
func (l *lab) dialAt(cgroupDir string, addr netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := l.inCgroup(cgroupDir, l.clientNS, func() (err error) {
		c, err = net.DialTimeout("tcp", addr.String(), 5*time.Second)
		return err
	})
	return c, err
}

// peersOf returns the peer entries of one cgroup directory.
func peersOf(t *testing.T, all map[PeerKey]PeerCounters, cgroupDir string) map[PeerKey]PeerCounters {
	t.Helper()
	id, err := cgroupv2.ID(cgroupDir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[PeerKey]PeerCounters{}
	for k, v := range all {
		if k.CgroupID == id {
			k.CgroupID = 0
			out[k] = v
		}
	}
	return out
}

// A client talks to three servers (one of which resets every connection) over IPv4 and IPv6
// and to a closed port, with connection counts the test chooses: every (cgroup, peer) entry
// holds exactly those, on both sides, and nothing else.
func TestTCPPeersExact(t *testing.T) {
	l, p := loadTCPLab(t)
	client := l.cgroup("peers-client")
	srvA, srvB, srvC := l.cgroup("peers-a"), l.cgroup("peers-b"), l.cgroup("peers-c")
	a4, a6 := netip.AddrPortFrom(serverV4, 8090), netip.AddrPortFrom(serverV6, 8090)
	b4, c4, closed := netip.AddrPortFrom(serverV4, 8091), netip.AddrPortFrom(serverV4, 8092), netip.AddrPortFrom(serverV4, 9)
	const nA4, nA6, nB, nC, nRefused = 7, 3, 11, 5, 4

	var wg sync.WaitGroup
	var mu sync.Mutex
	var got uint64
	wg.Add(nA4 + nA6 + nB)
	go serveSink(l.listenAt(srvA, a4), 10, &wg, &got, &mu)
	go serveSink(l.listenAt(srvA, a6), 10, &wg, &got, &mu)
	go serveSink(l.listenAt(srvB, b4), 10, &wg, &got, &mu)
	lnC := l.listenAt(srvC, c4)
	go func() {
		for {
			c, err := lnC.Accept()
			if err != nil {
				return
			}
			c.(*net.TCPConn).SetLinger(0) // close sends a RST
			c.Close()
		}
	}()
	talk := func(addr netip.AddrPort, n int) {
		for i := range n {
			c, err := l.dialAt(client, addr)
			if err != nil {
				t.Fatalf("connect %d to %s: %v", i, addr, err)
			}
			if _, err := c.Write(make([]byte, 1000)); err != nil {
				t.Fatal(err)
			}
			c.(*net.TCPConn).CloseWrite()
			if _, err := io.Copy(io.Discard, c); err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
	}
	talk(a4, nA4)
	talk(a6, nA6)
	talk(b4, nB)
	for i := range nC {
		c, err := l.dialAt(client, c4)
		if err == nil {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("connection %d to the resetting server: want ECONNRESET, got %v", i, err)
		}
	}
	for i := range nRefused {
		if c, err := l.dialAt(client, closed); !errors.Is(err, syscall.ECONNREFUSED) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("connect %d to a closed port: want ECONNREFUSED, got %v", i, err)
		}
	}
	wg.Wait()
	time.Sleep(100 * time.Millisecond) // the last FIN/ACKs

	all, err := p.ReadPeers()
	if err != nil {
		t.Fatal(err)
	}
	// Retransmits are not part of the plan, but a loaded machine retransmits on a veth too:
	// whatever the cgroup retransmitted is in its peers, compared below apart.
	retrans := func(m map[PeerKey]PeerCounters) (sum uint64) {
		for k, v := range m {
			sum += v.RetransSegs
			v.RetransSegs = 0
			m[k] = v
		}
		return sum
	}
	cli4, cli6 := clientV4, clientV6
	for _, c := range []struct {
		name, dir string
		want      map[PeerKey]PeerCounters
	}{
		{"client", client, map[PeerKey]PeerCounters{
			{Addr: serverV4, Port: 8090}: {Opens: nA4},
			{Addr: serverV6, Port: 8090}: {Opens: nA6},
			{Addr: serverV4, Port: 8091}: {Opens: nB},
			{Addr: serverV4, Port: 8092}: {Opens: nC, ResetsReceived: nC},
			{Addr: serverV4, Port: 9}:    {Refused: nRefused},
		}},
		{"server a", srvA, map[PeerKey]PeerCounters{
			{Addr: cli4, Inbound: true}: {Opens: nA4},
			{Addr: cli6, Inbound: true}: {Opens: nA6},
		}},
		{"server b", srvB, map[PeerKey]PeerCounters{{Addr: cli4, Inbound: true}: {Opens: nB}}},
		{"server c", srvC, map[PeerKey]PeerCounters{{Addr: cli4, Inbound: true}: {Opens: nC, ResetsSent: nC}}},
	} {
		gotPeers := peersOf(t, all, c.dir)
		peerRetrans := retrans(gotPeers)
		counters := tcpCountersOf(t, p, c.dir)
		if peerRetrans != counters.RetransSegs {
			t.Errorf("%s: retransmits over its peers %d, its own counter %d", c.name, peerRetrans, counters.RetransSegs)
		}
		if counters.PeerUnattributed != 0 {
			t.Errorf("%s: %d events not attributed to a peer, want 0", c.name, counters.PeerUnattributed)
		}
		if len(gotPeers) != len(c.want) {
			t.Errorf("%s: %d peers %v, want %d %v", c.name, len(gotPeers), gotPeers, len(c.want), c.want)
		}
		for k, want := range c.want {
			if gotPeers[k] != want {
				t.Errorf("%s: peer %v = %+v, want %+v", c.name, k, gotPeers[k], want)
			}
		}
		t.Logf("%s: %v", c.name, gotPeers)
	}
	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.PeerOverflow != 0 || st.Peers.Entries != 5+2+1+1 {
		t.Errorf("peer table: %d entries, %d overflowed; want 9 and 0", st.Peers.Entries, st.PeerOverflow)
	}
	// A cgroup that is gone takes its peers with it.
	if err := p.DeleteCgroups([]uint64{mustCgroupID(t, client)}); err != nil {
		t.Fatal(err)
	}
	if all, err = p.ReadPeers(); err != nil {
		t.Fatal(err)
	}
	if n := len(peersOf(t, all, client)); n != 0 || len(all) != 4 {
		t.Errorf("after deleting the client's cgroup: %d of its peers left, %d entries in all; want 0 and 4", n, len(all))
	}
}

func mustCgroupID(t *testing.T, dir string) uint64 {
	t.Helper()
	id, err := cgroupv2.ID(dir)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// A peer table of 2 entries and connects to 3 closed ports: the third port's failures are
// counted in the cgroup's PeerUnattributed and the probe's PeerOverflow, exactly, never lost.
func TestTCPPeersOverflowCounted(t *testing.T) {
	l := newLab(t)
	p, err := LoadTCP(TCPOptions{CgroupRoot: l.base, MaxPeers: 2})
	if err != nil {
		t.Fatalf("LoadTCP: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	client := l.cgroup("peers-overflow")
	ports := []uint16{9, 10, 11}
	counts := []int{3, 2, 6}
	for i, port := range ports {
		for range counts[i] {
			if c, err := l.dialAt(client, netip.AddrPortFrom(serverV4, port)); !errors.Is(err, syscall.ECONNREFUSED) {
				if c != nil {
					c.Close()
				}
				t.Fatalf("connect to closed port %d: want ECONNREFUSED, got %v", port, err)
			}
		}
	}
	all, err := p.ReadPeers()
	if err != nil {
		t.Fatal(err)
	}
	got := peersOf(t, all, client)
	want := map[PeerKey]PeerCounters{{Addr: serverV4, Port: 9}: {Refused: 3}, {Addr: serverV4, Port: 10}: {Refused: 2}}
	if len(got) != len(want) || got[PeerKey{Addr: serverV4, Port: 9}] != want[PeerKey{Addr: serverV4, Port: 9}] || got[PeerKey{Addr: serverV4, Port: 10}] != want[PeerKey{Addr: serverV4, Port: 10}] {
		t.Errorf("peers %v, want %v", got, want)
	}
	c := tcpCountersOf(t, p, client)
	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if c.ConnectRefused != 11 || c.PeerUnattributed != 6 || st.PeerOverflow != 6 || st.Peers.Entries != 2 || st.Peers.Max != 2 {
		t.Errorf("refused %d, unattributed %d, overflow %d, table %d/%d; want 11, 6, 6, 2/2", c.ConnectRefused, c.PeerUnattributed, st.PeerOverflow, st.Peers.Entries, st.Peers.Max)
	}
}
