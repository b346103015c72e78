package podnet

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/isoobs/isoobs/testlab/needroot"
)

// The helper mode lets TestSweepStale create a lab in a child process and kill it.
func TestMain(m *testing.M) {
	if os.Getenv("PODNET_TEST_HELPER") == "1" {
		runHelper()
		return
	}
	os.Exit(m.Run())
}

func runHelper() {
	labID := os.Getenv("PODNET_TEST_LABID")
	cg2, _ := CgroupV2Mount()
	n, err := NewNode(NodeConfig{Name: "dead-node", LabID: labID, CgroupParent: filepath.Join(cg2, "isoobs-"+labID, "dead-node"),
		Driver: DriverCgroupfs, PodCIDRv4: netip.MustParsePrefix("10.79.9.0/24"), PodCIDRv6: netip.MustParsePrefix("fd79:0:0:9::/64")})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	p, err := n.AttachPod(testPod(n, "default", "victim", "11111111-2222-3333-4444-555555555555", corev1.PodQOSBestEffort))
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	cmd := p.Command(context.Background(), "sleep", "infinity")
	if err := cmd.Start(); err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	b, _ := json.Marshal(map[string]any{"pause": p.PausePID, "child": cmd.Process.Pid, "veth": p.HostVeth, "cgroup": p.CgroupPath, "root": n.CgroupRoot()})
	fmt.Println(string(b))
	select {} // wait to be killed
}

func requireRoot(t testing.TB) {
	t.Helper()
	needroot.Require(t, "netns, veth, cgroups")
}

// randomLabID makes a fresh lab id and checks, after all of the test's nodes are closed, that
// the lab left nothing behind.
func randomLabID(t testing.TB) string {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	labID := "t" + hex.EncodeToString(b)
	cg2, _ := CgroupV2Mount()
	t.Cleanup(func() { assertLabGone(t, labID, filepath.Join(cg2, "isoobs-"+labID)) })
	return labID
}

var (
	cidrSeq  = 0
	labCIDRs = map[string][]string{} // labID → pod CIDRs its nodes used
)

// newTestNode makes a node in a fresh lab and checks after the test that the lab left nothing.
func newTestNode(t testing.TB, labID, name, driver string) *Node {
	t.Helper()
	cg2, err := CgroupV2Mount()
	if err != nil {
		t.Fatal(err)
	}
	cidrSeq++
	n, err := NewNode(NodeConfig{
		Name: name, LabID: labID, Driver: driver,
		CgroupParent: filepath.Join(cg2, "isoobs-"+labID, name),
		PodCIDRv4:    netip.MustParsePrefix(fmt.Sprintf("10.78.%d.0/24", cidrSeq)),
		PodCIDRv6:    netip.MustParsePrefix(fmt.Sprintf("fd78:0:0:%x::/64", cidrSeq)),
	})
	if err != nil {
		t.Fatal(err)
	}
	labCIDRs[labID] = append(labCIDRs[labID], n.cfg.PodCIDRv4.String(), n.cfg.PodCIDRv6.String())
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return n
}

func assertLabGone(t testing.TB, labID, cgroupDir string) {
	t.Helper()
	if _, err := os.Stat(cgroupDir); !os.IsNotExist(err) {
		t.Errorf("cgroup dir %s still exists", cgroupDir)
	}
	if _, err := os.Stat(labDir(labID)); !os.IsNotExist(err) {
		t.Errorf("state dir %s still exists", labDir(labID))
	}
	links, _ := netlink.LinkList()
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, labID+"-") {
			t.Errorf("link %s still exists", l.Attrs().Name)
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, _ := netlink.RuleList(fam)
		for _, r := range rules {
			for _, c := range labCIDRs[labID] {
				if r.Src != nil && r.Src.String() == c {
					t.Errorf("egress rule %s still exists", r)
				}
			}
		}
	}
}

func testPod(n *Node, ns, name, uid string, qos corev1.PodQOSClass) *corev1.Pod {
	v4, v6, err := n.AllocateIPs()
	if err != nil {
		panic(err)
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)},
		Spec:       corev1.PodSpec{NodeName: n.Name()},
		Status:     corev1.PodStatus{QOSClass: qos, PodIPs: []corev1.PodIP{{IP: v4.String()}, {IP: v6.String()}}},
	}
}

func newUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func run(t testing.TB, cmd *exec.Cmd) string {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, out)
	}
	return string(out)
}

func TestCgroupV2Mount(t *testing.T) {
	m, err := CgroupV2Mount()
	if err != nil {
		t.Fatal(err)
	}
	if !isCgroup2Dir(m) {
		t.Fatalf("%s is not cgroup2", m)
	}
}

func TestCgroupNaming(t *testing.T) {
	uid := types.UID("0a1b2c3d-0000-1111-2222-333344445555")
	cases := []struct {
		driver string
		qos    corev1.PodQOSClass
		want   string
	}{
		{DriverSystemd, corev1.PodQOSBurstable, "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_0000_1111_2222_333344445555.slice"},
		{DriverSystemd, corev1.PodQOSBestEffort, "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0a1b2c3d_0000_1111_2222_333344445555.slice"},
		{DriverSystemd, corev1.PodQOSGuaranteed, "kubepods.slice/kubepods-pod0a1b2c3d_0000_1111_2222_333344445555.slice"},
		{DriverCgroupfs, corev1.PodQOSBurstable, "kubepods/burstable/pod0a1b2c3d-0000-1111-2222-333344445555"},
		{DriverCgroupfs, corev1.PodQOSBestEffort, "kubepods/besteffort/pod0a1b2c3d-0000-1111-2222-333344445555"},
		{DriverCgroupfs, corev1.PodQOSGuaranteed, "kubepods/pod0a1b2c3d-0000-1111-2222-333344445555"},
	}
	for _, c := range cases {
		if got := podCgroupRel(c.driver, c.qos, uid); got != c.want {
			t.Errorf("%s/%s: got %s want %s", c.driver, c.qos, got, c.want)
		}
	}
}

func TestQOSClassOf(t *testing.T) {
	res := func(req, lim string) corev1.ResourceRequirements {
		r := corev1.ResourceRequirements{}
		if req != "" {
			r.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(req), corev1.ResourceMemory: resource.MustParse(req + "Mi")}
		}
		if lim != "" {
			r.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(lim), corev1.ResourceMemory: resource.MustParse(lim + "Mi")}
		}
		return r
	}
	pod := func(r corev1.ResourceRequirements) *corev1.Pod {
		return &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Resources: r}}}}
	}
	if got := QOSClassOf(pod(res("", ""))); got != corev1.PodQOSBestEffort {
		t.Errorf("none: %s", got)
	}
	if got := QOSClassOf(pod(res("1", ""))); got != corev1.PodQOSBurstable {
		t.Errorf("requests only: %s", got)
	}
	if got := QOSClassOf(pod(res("1", "2"))); got != corev1.PodQOSBurstable {
		t.Errorf("req<lim: %s", got)
	}
	if got := QOSClassOf(pod(res("", "2"))); got != corev1.PodQOSGuaranteed {
		t.Errorf("limits only: %s", got)
	}
	if got := QOSClassOf(pod(res("2", "2"))); got != corev1.PodQOSGuaranteed {
		t.Errorf("req==lim: %s", got)
	}
}

func TestNewNodeRejectsBadConfig(t *testing.T) {
	requireRoot(t)
	cg2, _ := CgroupV2Mount()
	good := NodeConfig{Name: "n", LabID: "tbad", CgroupParent: filepath.Join(cg2, "isoobs-tbad", "n"), Driver: DriverSystemd,
		PodCIDRv4: netip.MustParsePrefix("10.78.200.0/24")}
	cases := map[string]func(c *NodeConfig){
		"labid too long":  func(c *NodeConfig) { c.LabID = "toolong" },
		"labid uppercase": func(c *NodeConfig) { c.LabID = "AB" },
		"no name":         func(c *NodeConfig) { c.Name = "" },
		"driver":          func(c *NodeConfig) { c.Driver = "docker" },
		"relative cgroup": func(c *NodeConfig) { c.CgroupParent = "isoobs/n" },
		"outside cgroup2": func(c *NodeConfig) { c.CgroupParent = "/tmp/isoobs-n" },
		"v4 cidr is v6":   func(c *NodeConfig) { c.PodCIDRv4 = netip.MustParsePrefix("fd00::/64") },
		"no cidr":         func(c *NodeConfig) { c.PodCIDRv4 = netip.Prefix{} },
	}
	for name, mut := range cases {
		c := good
		mut(&c)
		if n, err := NewNode(c); err == nil {
			n.Close()
			t.Errorf("%s: accepted", name)
		} else if !strings.Contains(err.Error(), "podnet:") {
			t.Errorf("%s: error lacks context: %v", name, err)
		}
	}
	if _, err := os.Stat(labDir("tbad")); !os.IsNotExist(err) {
		t.Errorf("rejected configs left state behind")
	}
}

func TestAllocateIPs(t *testing.T) {
	n := &Node{cfg: NodeConfig{PodCIDRv4: netip.MustParsePrefix("10.1.2.0/29"), PodCIDRv6: netip.MustParsePrefix("fd00:1::/64")},
		used: map[uint64]bool{}, nextHost: 2, pods: map[types.UID]*Pod{}}
	var got []string
	for {
		v4, v6, err := n.AllocateIPs()
		if err != nil {
			if !strings.Contains(err.Error(), "no free pod address") {
				t.Fatalf("unexpected error %v", err)
			}
			break
		}
		got = append(got, v4.String()+"|"+v6.String())
	}
	want := []string{"10.1.2.2|fd00:1::2", "10.1.2.3|fd00:1::3", "10.1.2.4|fd00:1::4", "10.1.2.5|fd00:1::5", "10.1.2.6|fd00:1::6"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("got %v want %v", got, want)
	}
	n.releaseIPs(&Pod{IPv4: netip.MustParseAddr("10.1.2.4"), IPv6: netip.MustParseAddr("fd00:1::4")})
	v4, v6, err := n.AllocateIPs()
	if err != nil || v4.String() != "10.1.2.4" || v6.String() != "fd00:1::4" {
		t.Fatalf("reuse: %v %v %v", v4, v6, err)
	}
	if a := addOffset(netip.MustParseAddr("10.0.0.0"), 300); a.String() != "10.0.1.44" {
		t.Fatalf("addOffset carry: %s", a)
	}
}

func TestPodGetsAddressesCgroupAndNetns(t *testing.T) {
	requireRoot(t)
	for _, driver := range []string{DriverSystemd, DriverCgroupfs} {
		t.Run(driver, func(t *testing.T) {
			labID := randomLabID(t)
			n := newTestNode(t, labID, "lab-node-a", driver)
			uid := newUID()
			k8sPod := testPod(n, "tenant-jobs", "crawler-0", uid, corev1.PodQOSBurstable)
			p, err := n.AttachPod(k8sPod)
			if err != nil {
				t.Fatal(err)
			}
			if again, err := n.AttachPod(k8sPod); err != nil || again != p {
				t.Fatalf("AttachPod not idempotent: %v %v", again, err)
			}
			wantV4, wantV6 := k8sPod.Status.PodIPs[0].IP, k8sPod.Status.PodIPs[1].IP
			if p.IPv4.String() != wantV4 || p.IPv6.String() != wantV6 {
				t.Fatalf("pod IPs %s %s, want %s %s", p.IPv4, p.IPv6, wantV4, wantV6)
			}
			if len(p.HostVeth) > 15 || !strings.HasPrefix(p.HostVeth, labID+"-") {
				t.Fatalf("host veth name %q", p.HostVeth)
			}

			// Addresses as the pod sees them.
			var addrs []struct {
				IfName   string `json:"ifname"`
				AddrInfo []struct {
					Local     string `json:"local"`
					Prefixlen int    `json:"prefixlen"`
				} `json:"addr_info"`
			}
			if err := json.Unmarshal([]byte(run(t, p.Command(context.Background(), "ip", "-j", "addr", "show", "dev", "eth0"))), &addrs); err != nil {
				t.Fatal(err)
			}
			var seen []string
			for _, a := range addrs[0].AddrInfo {
				seen = append(seen, fmt.Sprintf("%s/%d", a.Local, a.Prefixlen))
			}
			for _, want := range []string{wantV4 + "/32", wantV6 + "/128"} {
				if !strings.Contains(strings.Join(seen, " "), want) {
					t.Errorf("pod eth0 lacks %s: %v", want, seen)
				}
			}
			routes := run(t, p.Command(context.Background(), "ip", "route"))
			if !strings.Contains(routes, "default via 169.254.1.1 dev eth0") {
				t.Errorf("pod routes: %s", routes)
			}
			// Host route back to the pod.
			hostRoutes := run(t, exec.Command("ip", "route", "show", wantV4))
			if !strings.Contains(hostRoutes, "dev "+p.HostVeth) {
				t.Errorf("host route to pod: %q", hostRoutes)
			}

			// The process is in the container cgroup below the pod cgroup, and in the pod's netns.
			out := run(t, p.Command(context.Background(), "sh", "-c", "cat /proc/self/cgroup; readlink /proc/self/ns/net"))
			cg2, _ := CgroupV2Mount()
			wantCg := "0::/" + strings.TrimPrefix(p.ContainerCgroupPath, cg2+"/")
			if !strings.Contains(out, wantCg+"\n") {
				t.Errorf("/proc/self/cgroup of pod process:\n%s\nwant line %s", out, wantCg)
			}
			if filepath.Dir(p.ContainerCgroupPath) != p.CgroupPath {
				t.Errorf("container cgroup %s not directly below pod cgroup %s", p.ContainerCgroupPath, p.CgroupPath)
			}
			wantRel := podCgroupRel(driver, corev1.PodQOSBurstable, types.UID(uid))
			if p.CgroupPath != filepath.Join(n.CgroupRoot(), wantRel) {
				t.Errorf("pod cgroup %s, want %s", p.CgroupPath, filepath.Join(n.CgroupRoot(), wantRel))
			}
			podNs, _ := os.Readlink(p.NetnsPath)
			selfNs, _ := os.Readlink("/proc/self/ns/net")
			if !strings.Contains(out, podNs) || podNs == selfNs {
				t.Errorf("pod process netns: %s, pod netns %s, host %s", out, podNs, selfNs)
			}
			if ino, _ := cgroupInode(p.CgroupPath); ino != p.CgroupID || ino == 0 {
				t.Errorf("CgroupID %d, inode %d", p.CgroupID, ino)
			}

			// DetachPod removes this pod's veth, cgroup and pause process.
			pause := p.PausePID
			if err := n.DetachPod(p.UID); err != nil {
				t.Fatal(err)
			}
			if _, err := netlink.LinkByName(p.HostVeth); err == nil {
				t.Errorf("veth survives DetachPod")
			}
			if _, err := os.Stat(p.CgroupPath); !os.IsNotExist(err) {
				t.Errorf("pod cgroup survives DetachPod")
			}
			if processAlive(pause) {
				t.Errorf("pause process %d survives DetachPod", pause)
			}
			if len(n.Pods()) != 0 {
				t.Errorf("Pods() after detach: %v", n.Pods())
			}
		})
	}
}

func TestAttachPodRejectsBadPods(t *testing.T) {
	requireRoot(t)
	n := newTestNode(t, randomLabID(t), "lab-node-a", DriverSystemd)
	good := testPod(n, "default", "p", newUID(), corev1.PodQOSBestEffort)
	cases := map[string]func(p *corev1.Pod){
		"no uid":     func(p *corev1.Pod) { p.UID = "" },
		"other node": func(p *corev1.Pod) { p.Spec.NodeName = "elsewhere" },
		"no ips":     func(p *corev1.Pod) { p.Status.PodIPs = nil },
		"bad ip":     func(p *corev1.Pod) { p.Status.PodIPs = []corev1.PodIP{{IP: "10.1.2"}} },
	}
	for name, mut := range cases {
		p := good.DeepCopy()
		mut(p)
		if _, err := n.AttachPod(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := n.AttachPod(good); err != nil {
		t.Fatal(err)
	}
	dup := good.DeepCopy()
	dup.UID = types.UID(newUID())
	if _, err := n.AttachPod(dup); err == nil || !strings.Contains(err.Error(), "already has") {
		t.Errorf("duplicate IPs accepted: %v", err)
	}
}

// pingFrom sends one ICMP echo from inside pod src to dst and waits for the reply.
func pingFrom(t *testing.T, src *Pod, dst netip.Addr) {
	t.Helper()
	err := src.InNetns(func() error {
		network, proto, typ := "ip4:icmp", 1, icmp.Type(ipv4.ICMPTypeEcho)
		if dst.Is6() {
			network, proto, typ = "ip6:ipv6-icmp", 58, ipv6.ICMPTypeEchoRequest
		}
		c, err := icmp.ListenPacket(network, "")
		if err != nil {
			return err
		}
		defer c.Close()
		msg, _ := (&icmp.Message{Type: typ, Body: &icmp.Echo{ID: 0x1234, Seq: 7, Data: []byte("isoobs")}}).Marshal(nil)
		deadline := time.Now().Add(3 * time.Second)
		_ = c.SetDeadline(deadline)
		for time.Now().Before(deadline) {
			if _, err := c.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
				return err
			}
			buf := make([]byte, 1500)
			_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			for {
				nr, from, err := c.ReadFrom(buf)
				if err != nil {
					break // resend
				}
				m, err := icmp.ParseMessage(proto, buf[:nr])
				if err != nil {
					continue
				}
				if e, ok := m.Body.(*icmp.Echo); ok && (m.Type == ipv4.ICMPTypeEchoReply || m.Type == ipv6.ICMPTypeEchoReply) && e.Seq == 7 && from.String() == dst.String() {
					return nil
				}
			}
		}
		return fmt.Errorf("no echo reply from %s", dst)
	})
	if err != nil {
		t.Errorf("ping %s -> %s: %v", src, dst, err)
	}
}

// udpExchange sends a datagram from pod a to a UDP echo in pod b and checks that b saw a's own address.
func udpExchange(t *testing.T, a, b *Pod, dst netip.Addr) {
	t.Helper()
	var ln net.PacketConn
	if err := b.InNetns(func() error {
		var err error
		ln, err = net.ListenPacket("udp", netip.AddrPortFrom(dst, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seenFrom := make(chan string, 1)
	go func() {
		buf := make([]byte, 512)
		n, from, err := ln.ReadFrom(buf)
		if err != nil {
			return
		}
		seenFrom <- from.(*net.UDPAddr).AddrPort().Addr().Unmap().String()
		_, _ = ln.WriteTo(buf[:n], from)
	}()
	want := a.IPv4
	if dst.Is6() {
		want = a.IPv6
	}
	err := a.InNetns(func() error {
		c, err := net.Dial("udp", ln.LocalAddr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte("hello")); err != nil {
			return err
		}
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if string(buf[:n]) != "hello" {
			return fmt.Errorf("echo %q", buf[:n])
		}
		return nil
	})
	if err != nil {
		t.Fatalf("udp %s -> %s: %v", a, dst, err)
	}
	if got := <-seenFrom; got != want.String() {
		t.Errorf("receiver saw source %s, want %s (no NAT between pods)", got, want)
	}
}

func TestPodToPodAcrossNodes(t *testing.T) {
	requireRoot(t)
	labID := randomLabID(t)
	na := newTestNode(t, labID, "lab-node-a", DriverSystemd)
	nb := newTestNode(t, labID, "lab-node-b", DriverCgroupfs)
	pa, err := na.AttachPod(testPod(na, "default", "a", newUID(), corev1.PodQOSBestEffort))
	if err != nil {
		t.Fatal(err)
	}
	pb, err := nb.AttachPod(testPod(nb, "default", "b", newUID(), corev1.PodQOSGuaranteed))
	if err != nil {
		t.Fatal(err)
	}
	// Pod traffic stays on the host: routing decisions only, no packet leaves.
	for _, dst := range []string{"8.8.8.8", "10.255.255.53", "2001:4860:4860::8888"} {
		src := pa.IPv4.String()
		if strings.Contains(dst, ":") {
			src = pa.IPv6.String()
		}
		out, _ := exec.Command("ip", "route", "get", dst, "from", src, "iif", pa.HostVeth).CombinedOutput()
		if !strings.Contains(string(out), "unreachable") {
			t.Errorf("route from pod to %s: %s", dst, out)
		}
	}
	for _, dst := range []netip.Addr{pb.IPv4, pb.IPv6} {
		src := pa.IPv4
		if dst.Is6() {
			src = pa.IPv6
		}
		out, err := exec.Command("ip", "route", "get", dst.String(), "from", src.String(), "iif", pa.HostVeth).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "dev "+pb.HostVeth) {
			t.Errorf("route from pod a to pod b %s: %s %v", dst, out, err)
		}
	}
	step := time.Now()
	lap := func(what string) { t.Logf("%s: %s", what, time.Since(step)); step = time.Now() }
	pingFrom(t, pa, pb.IPv4)
	lap("ping v4")
	pingFrom(t, pa, pb.IPv6)
	lap("ping v6")
	pingFrom(t, pb, pa.IPv4)
	lap("ping v4 back")
	udpExchange(t, pa, pb, pb.IPv4)
	lap("udp v4")
	udpExchange(t, pa, pb, pb.IPv6)
	lap("udp v6")
	udpExchange(t, pb, pa, pa.IPv6)
	lap("udp v6 back")

	// A ClusterIP-style extra address on b is reachable from a.
	// Random ClusterIP-style addresses: other labs on this host may be routing theirs.
	rb := make([]byte, 2)
	_, _ = rand.Read(rb)
	vip := netip.AddrFrom4([4]byte{10, 97, rb[0], rb[1]&0xfe | 2})
	if err := pb.AddLocalAddress(vip); err != nil {
		t.Fatal(err)
	}
	if err := pb.AddLocalAddress(vip); err != nil {
		t.Fatalf("AddLocalAddress not idempotent: %v", err)
	}
	udpExchange(t, pa, pb, vip)
	vip6 := netip.MustParseAddr(fmt.Sprintf("fd97::%x:%x", rb[0], rb[1]))
	if err := pb.AddLocalAddress(vip6); err != nil {
		t.Fatal(err)
	}
	udpExchange(t, pa, pb, vip6)
	// The same address on another pod is refused, not silently load-balanced.
	if err := pa.AddLocalAddress(vip6); err == nil || !strings.Contains(err.Error(), "already routed") {
		t.Errorf("duplicate local address: %v", err)
	}
}

func TestForwardTCP(t *testing.T) {
	requireRoot(t)
	n := newTestNode(t, randomLabID(t), "lab-node-a", DriverSystemd)
	p, err := n.AttachPod(testPod(n, "kube-system", "coredns", newUID(), corev1.PodQOSBurstable))
	if err != nil {
		t.Fatal(err)
	}
	// A host-only service on 127.0.0.1, reached from the pod through the same address.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "host got %s", line)
			}()
		}
	}()
	if _, err := p.ForwardTCP(ln.Addr().String(), ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	out := run(t, p.Command(context.Background(), "bash", "-c", "exec 3<>/dev/tcp/"+strings.Replace(ln.Addr().String(), ":", "/", 1)+"; echo ping >&3; cat <&3"))
	if out != "host got ping\n" {
		t.Fatalf("through forwarder: %q", out)
	}
}

func TestTwoLabsDoNotCollide(t *testing.T) {
	requireRoot(t)
	l1, l2 := randomLabID(t), randomLabID(t)
	n1 := newTestNode(t, l1, "lab-node-a", DriverSystemd)
	n2 := newTestNode(t, l2, "lab-node-a", DriverSystemd)
	uid := newUID() // same pod UID and names in both labs
	p1, err := n1.AttachPod(testPod(n1, "default", "same", uid, corev1.PodQOSBurstable))
	if err != nil {
		t.Fatal(err)
	}
	p2, err := n2.AttachPod(testPod(n2, "default", "same", uid, corev1.PodQOSBurstable))
	if err != nil {
		t.Fatal(err)
	}
	if p1.HostVeth == p2.HostVeth || p1.CgroupPath == p2.CgroupPath || p1.NetnsPath == p2.NetnsPath {
		t.Fatalf("collision: %+v %+v", p1, p2)
	}
	// Closing one lab leaves the other intact.
	if err := n1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(p2.HostVeth); err != nil {
		t.Errorf("other lab's veth gone: %v", err)
	}
	if _, err := os.Stat(p2.CgroupPath); err != nil {
		t.Errorf("other lab's cgroup gone: %v", err)
	}
}

func TestLabIDInUseByLiveProcess(t *testing.T) {
	requireRoot(t)
	labID := randomLabID(t)
	dir := labDir(labID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	st, err := processStartTime(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(filepath.Join(dir, "owner.json"), owner{PID: 1, Start: st}); err != nil {
		t.Fatal(err)
	}
	cg2, _ := CgroupV2Mount()
	_, err = NewNode(NodeConfig{Name: "n", LabID: labID, CgroupParent: filepath.Join(cg2, "isoobs-"+labID, "n"), PodCIDRv4: netip.MustParsePrefix("10.78.201.0/24")})
	if err == nil || !strings.Contains(err.Error(), "in use by running process 1") {
		t.Fatalf("want in-use error, got %v", err)
	}
	if err := SweepStale(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("SweepStale removed a live lab: %v", err)
	}
}

func TestSweepStaleRemovesDeadLab(t *testing.T) {
	requireRoot(t)
	labID := randomLabID(t)
	self, _ := os.Executable()
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), "PODNET_TEST_HELPER=1", "PODNET_TEST_LABID="+labID)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.HasPrefix(line, "ERR") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper: %q %v", line, err)
	}
	var info struct {
		Pause, Child int
		Veth, Cgroup string
		Root         string
	}
	if err := json.Unmarshal([]byte(line), &info); err != nil {
		t.Fatal(err)
	}
	cg2, _ := CgroupV2Mount()
	labCg := filepath.Join(cg2, "isoobs-"+labID)
	t.Cleanup(func() { _ = RemoveCgroupTree(labCg); _ = os.RemoveAll(labDir(labID)) })

	// The lab's owner dies without cleaning up.
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	// Pdeathsig takes the pause process (and with it netns and veth) down.
	deadline := time.Now().Add(5 * time.Second)
	for processAlive(info.Pause) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if processAlive(info.Pause) {
		t.Errorf("pause process %d outlived its owner", info.Pause)
	}
	if _, err := os.Stat(info.Cgroup); err != nil {
		t.Fatalf("expected leftover cgroup %s before the sweep: %v", info.Cgroup, err)
	}
	labCIDRs[labID] = []string{"10.79.9.0/24", "fd79:0:0:9::/64"}
	if out, _ := exec.Command("ip", "rule").CombinedOutput(); !strings.Contains(string(out), "from 10.79.9.0/24") {
		t.Errorf("expected the dead lab's egress rules before the sweep:\n%s", out)
	}
	if err := SweepStale(); err != nil {
		t.Fatal(err)
	}
	assertLabGone(t, labID, labCg)
	if processAlive(info.Child) {
		t.Errorf("pod process %d survived the sweep", info.Child)
	}
}

// BenchmarkAttachDetach measures the node side of one pod start and stop.
func BenchmarkAttachDetach(b *testing.B) {
	requireRoot(b)
	n := newTestNode(b, randomLabID(b), "bench-node", DriverSystemd)
	for b.Loop() {
		p, err := n.AttachPod(testPod(n, "default", "bench", newUID(), corev1.PodQOSBurstable))
		if err != nil {
			b.Fatal(err)
		}
		if err := n.DetachPod(p.UID); err != nil {
			b.Fatal(err)
		}
	}
}

// processAlive is false for a missing process and for a zombie (the machine's PID 1 may reap
// orphans late).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestResolvConfAndWorkingDir(t *testing.T) {
	requireRoot(t)
	n := newTestNode(t, randomLabID(t), "lab-node-a", DriverCgroupfs)
	p, err := n.AttachPod(testPod(n, "tenant-jobs", "crawler", newUID(), corev1.PodQOSBestEffort))
	if err != nil {
		t.Fatal(err)
	}
	hostBefore, _ := os.ReadFile("/etc/resolv.conf")
	want := KubeResolvConf("tenant-jobs", "", netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd96::a"))
	if want != "search tenant-jobs.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\nnameserver fd96::a\noptions ndots:5\n" {
		t.Fatalf("KubeResolvConf: %q", want)
	}
	if err := p.SetResolvConf(want); err != nil {
		t.Fatal(err)
	}
	if got := run(t, p.Command(context.Background(), "cat", "/etc/resolv.conf")); got != want {
		t.Errorf("pod sees %q", got)
	}
	again := KubeResolvConf("other", "", netip.MustParseAddr("10.96.0.11"))
	if err := p.SetResolvConf(again); err != nil {
		t.Fatal(err)
	}
	if got := run(t, p.Command(context.Background(), "cat", "/etc/resolv.conf")); got != again {
		t.Errorf("after update pod sees %q", got)
	}
	if hostAfter, _ := os.ReadFile("/etc/resolv.conf"); string(hostAfter) != string(hostBefore) {
		t.Errorf("host resolv.conf changed: %q", hostAfter)
	}
	if out, _ := exec.Command("findmnt", "-n", "/etc/resolv.conf").CombinedOutput(); len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("the bind mount leaked to the host: %s", out)
	}
	// cmd.Dir survives entering the pod's mount namespace.
	dir := t.TempDir()
	cmd := p.Command(context.Background(), "pwd")
	cmd.Dir = dir
	if got := strings.TrimSpace(run(t, cmd)); got != dir {
		t.Errorf("pwd in pod %q, want %q", got, dir)
	}
}

// BenchmarkAttach measures AttachPod alone (the detach is not timed).
func BenchmarkAttach(b *testing.B) {
	requireRoot(b)
	n := newTestNode(b, randomLabID(b), "bench-node", DriverSystemd)
	for b.Loop() {
		p, err := n.AttachPod(testPod(n, "default", "bench", newUID(), corev1.PodQOSBurstable))
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := n.DetachPod(p.UID); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
