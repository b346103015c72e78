package bpf

import (
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

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
