package bpf

import (
	"errors"
	"maps"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/isoobs/isoobs/cgroupv2"
)

func TestDropReasonNames(t *testing.T) {
	names, err := loadDropReasons()
	if err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	found := false
	for r, n := range names {
		if n == "NETFILTER_DROP" {
			found = true
			if DropReasonName(r) != "NETFILTER_DROP" {
				t.Errorf("DropReasonName(%d) = %s", r, DropReasonName(r))
			}
		}
	}
	if !found {
		t.Errorf("no NETFILTER_DROP among the kernel's %d drop reasons", len(names))
	}
}

// TestDropsNetfilterExact: an iptables DROP in a pod's netns drops what the pod sends; each
// drop is counted for the pod's cgroup with reason NETFILTER_DROP, exactly, and the same from
// a process outside the probe root is not counted.
func TestDropsNetfilterExact(t *testing.T) {
	l, p := loadTCPLab(t)
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("needs iptables (apt-get install iptables)")
	}
	client := l.cgroup("drops-client")
	err := inNetns(l.clientNS, func() error {
		out, err := exec.Command("iptables", "-A", "OUTPUT", "-p", "udp", "--dport", "9999", "-j", "DROP").CombinedOutput()
		if err != nil {
			return errors.New(string(out))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	const n, size = 37, 100
	send := func(cgroupDir string) {
		var c net.Conn
		dial := func() (err error) {
			c, err = net.Dial("udp", netip.AddrPortFrom(serverV4, 9999).String())
			return err
		}
		if cgroupDir != "" {
			err = l.inCgroup(cgroupDir, l.clientNS, dial)
		} else {
			err = inNetns(l.clientNS, dial)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for range n {
			// A datagram dropped at OUTPUT: the send fails with EPERM, as netfilter says.
			_, _ = c.Write(make([]byte, size))
		}
	}
	send(client)
	send("") // this process's own cgroup, outside the root
	id, err := cgroupv2.ID(client)
	if err != nil {
		t.Fatal(err)
	}
	drops, err := p.ReadDrops()
	if err != nil {
		t.Fatal(err)
	}
	var got DropCounters
	var reasons []string
	for k, v := range drops {
		if k.CgroupID == id {
			reasons = append(reasons, DropReasonName(k.Reason))
			if DropReasonName(k.Reason) == "NETFILTER_DROP" {
				got = v
			}
		}
		if own, _ := cgroupv2.ID(l.origCg); k.CgroupID == own {
			t.Errorf("drops of this process (outside the root) counted: %v %v", k, v)
		}
	}
	// IP bytes: 20 IPv4 + 8 UDP header bytes per datagram.
	if got.Packets != n || got.Bytes != n*(size+28) {
		t.Errorf("client pod NETFILTER_DROP: %d packets %d bytes, want %d and %d (reasons seen: %v)", got.Packets, got.Bytes, n, n*(size+28), reasons)
	}
	if len(reasons) != 1 {
		t.Errorf("client pod drop reasons %v, want NETFILTER_DROP only", reasons)
	}
	// Where: all 37 in one netfilter function (nft_do_chain with iptables-nft, as here; the
	// legacy backend's hook runner otherwise), the host process's not counted.
	locs, err := p.ReadDropLocations()
	if err != nil {
		t.Fatal(err)
	}
	byFunc := map[string]uint64{}
	for k, v := range locs {
		if DropReasonName(k.Reason) == "NETFILTER_DROP" {
			byFunc[KernelFunction(k.Location)] += v
		}
	}
	var fn string
	for f := range byFunc {
		fn = f
	}
	if len(byFunc) != 1 || byFunc[fn] != n || !(strings.HasPrefix(fn, "nf") || strings.HasPrefix(fn, "ipt")) {
		t.Errorf("NETFILTER_DROP locations %v, want one netfilter function with %d", byFunc, n)
	}
	t.Logf("NETFILTER_DROP location: %s %d", fn, byFunc[fn])
}

// TestDropsByDestinationExact: an iptables DROP in the server netns's INPUT chain drops what
// the client sends to a port without a socket, before any socket lookup: the packets have no
// socket (the sender's stayed behind at the veth), so they are counted per destination
// address, IPv4 and IPv6, exactly, with the kernel's reason. With a table of one destination,
// the second destination's drops are counted under cgroup 0 and in DropDstOverflow, exactly.
func TestDropsByDestinationExact(t *testing.T) {
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("needs iptables (apt-get install iptables)")
	}
	for _, full := range []bool{false, true} {
		t.Run(map[bool]string{false: "table", true: "overflow"}[full], func(t *testing.T) {
			l := newLab(t)
			opts := TCPOptions{CgroupRoot: l.base}
			if full {
				opts.MaxDropDestinations = 1
			}
			p, err := LoadTCP(opts)
			if err != nil {
				t.Fatalf("LoadTCP: %v", err)
			}
			defer p.Close()
			err = inNetns(l.serverNS, func() error {
				for _, cmd := range []string{"iptables", "ip6tables"} {
					out, err := exec.Command(cmd, "-A", "INPUT", "-p", "udp", "--dport", "9998", "-j", "DROP").CombinedOutput()
					if err != nil {
						return errors.New(cmd + ": " + string(out))
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			const n4, n6, size = 29, 13, 100
			send := func(dst netip.Addr, n int) {
				err := inNetns(l.clientNS, func() error {
					c, err := net.Dial("udp", netip.AddrPortFrom(dst, 9998).String())
					if err != nil {
						return err
					}
					defer c.Close()
					for range n {
						if _, err := c.Write(make([]byte, size)); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			send(serverV4, n4)
			// IPv6 after IPv4 so the one-entry table holds IPv4's; an unanswered neighbour
			// solicitation must not take the entry first: the v4 entry exists by now.
			send(serverV6, n6)
			var dsts map[DropDstKey]DropCounters
			want := map[netip.Addr]DropCounters{serverV4: {n4, n4 * (size + 28)}, serverV6: {n6, n6 * (size + 48)}}
			var wantNoSocket uint64
			all := want
			// Datagrams are dropped in the receiving softirq, IPv6's once the neighbour is
			// resolved: wait for the last.
			var got map[netip.Addr]DropCounters
			var noSocket uint64
			var st TCPStats
			for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				if dsts, err = p.ReadDropDestinations(); err != nil {
					t.Fatal(err)
				}
				got = map[netip.Addr]DropCounters{}
				for k, v := range dsts {
					if (k.Addr == serverV4 || k.Addr == serverV6) && DropReasonName(k.Reason) == "NETFILTER_DROP" {
						got[k.Addr] = v
					}
				}
				drops, err := p.ReadDrops()
				if err != nil {
					t.Fatal(err)
				}
				noSocket = 0
				for k, v := range drops {
					if k.CgroupID == 0 && DropReasonName(k.Reason) == "NETFILTER_DROP" {
						noSocket += v.Packets
					}
				}
				if st, err = p.Stats(); err != nil {
					t.Fatal(err)
				}
				if full {
					// The one entry is IPv4's, or (the netns's neighbour discovery came first)
					// some other destination's: then both overflow.
					want, wantNoSocket = map[netip.Addr]DropCounters{}, n4+n6
					if _, ok := got[serverV4]; ok {
						want, wantNoSocket = map[netip.Addr]DropCounters{serverV4: all[serverV4]}, n6
					}
				}
				if (maps.Equal(got, want) && noSocket == wantNoSocket) || time.Now().After(deadline) {
					break
				}
			}
			for k, v := range dsts {
				t.Logf("destination %v %s: %d packets %d bytes", k.Addr, DropReasonName(k.Reason), v.Packets, v.Bytes)
			}
			t.Logf("NETFILTER_DROP under cgroup 0 (not per destination): %d; overflow %d; entries %d of %d", noSocket, st.DropDstOverflow, st.DropDests.Entries, st.DropDests.Max)
			if !maps.Equal(got, want) {
				t.Errorf("NETFILTER_DROP by destination %v, want %v", got, want)
			}
			// With one entry, every other socket-less drop (the IPv6 datagrams, and the netns's
			// own neighbour discovery) overflows into cgroup 0; with room, none does.
			if noSocket != wantNoSocket || (full && (st.DropDstOverflow < n6 || st.DropDests.Entries != 1)) || (!full && st.DropDstOverflow != 0) {
				t.Errorf("%d NETFILTER_DROP under cgroup 0, overflow %d, entries %d; want %d", noSocket, st.DropDstOverflow, st.DropDests.Entries, wantNoSocket)
			}
		})
	}
}

// TestDeleteDropDestinationsExact: deleting a per-destination entry returns what it held at the
// delete, including drops counted after the caller's last read (13 read, 8 more, 21 returned),
// removes it, and a later drop to the address makes a new entry that holds only the new
// drops (5).
func TestDeleteDropDestinationsExact(t *testing.T) {
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("needs iptables (apt-get install iptables)")
	}
	l := newLab(t)
	p, err := LoadTCP(TCPOptions{CgroupRoot: l.base})
	if err != nil {
		t.Fatalf("LoadTCP: %v", err)
	}
	defer p.Close()
	err = inNetns(l.serverNS, func() error {
		out, err := exec.Command("iptables", "-A", "INPUT", "-p", "udp", "--dport", "9996", "-j", "DROP").CombinedOutput()
		if err != nil {
			return errors.New("iptables: " + string(out))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	const size = 100
	send := func(n int) {
		t.Helper()
		err := inNetns(l.clientNS, func() error {
			c, err := net.Dial("udp", netip.AddrPortFrom(serverV4, 9996).String())
			if err != nil {
				return err
			}
			defer c.Close()
			for range n {
				if _, err := c.Write(make([]byte, size)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	reason := uint32(0)
	for r := uint32(2); r < 1024; r++ {
		if DropReasonName(r) == "NETFILTER_DROP" {
			reason = r
		}
	}
	if reason == 0 {
		t.Skip("kernel BTF without NETFILTER_DROP")
	}
	key := DropDstKey{Addr: serverV4, Reason: reason}
	// waitFor reads the table until key holds packets (or 3 s passed).
	waitFor := func(packets uint64) DropCounters {
		t.Helper()
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			dsts, err := p.ReadDropDestinations()
			if err != nil {
				t.Fatal(err)
			}
			if dsts[key].Packets >= packets || time.Now().After(deadline) {
				return dsts[key]
			}
		}
	}
	const first, later, again = 13, 8, 5
	send(first)
	if got := waitFor(first); got != (DropCounters{first, first * (size + 28)}) {
		t.Fatalf("read %+v, want %d packets", got, first)
	}
	send(later) // after the read, before the delete
	waitFor(first + later)
	del, err := p.DeleteDropDestinations([]DropDstKey{key, {Addr: netip.MustParseAddr("198.51.100.1"), Reason: reason}})
	if err != nil {
		t.Fatal(err)
	}
	if len(del) != 1 || del[key] != (DropCounters{first + later, (first + later) * (size + 28)}) {
		t.Errorf("deleted %v, want only %v with %d packets (the absent key left out)", del, key.Addr, first+later)
	}
	dsts, err := p.ReadDropDestinations()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := dsts[key]; ok {
		t.Errorf("entry %v still in the table after the delete: %+v", key.Addr, dsts[key])
	}
	send(again)
	if got := waitFor(again); got != (DropCounters{again, again * (size + 28)}) {
		t.Errorf("after the delete: %+v, want a new entry of %d packets", got, again)
	}
	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.DropDstOverflow != 0 {
		t.Errorf("map full %d, want 0", st.DropDstOverflow)
	}
}
