package testlab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/isoobs/isoobs/testlab/needroot"
	"github.com/isoobs/isoobs/testlab/podnet"
)

// checkNodeSide verifies that the pod's netns really holds the addresses the API shows, on the
// node the API says, and that its cgroup exists.
func checkNodeSide(t *testing.T, lab *Lab, pod *corev1.Pod) {
	t.Helper()
	np := lab.Pod(pod.Namespace, pod.Name)
	if np == nil {
		t.Errorf("pod %s/%s is not adopted", pod.Namespace, pod.Name)
		return
	}
	if np.UID != pod.UID || np.Node != pod.Spec.NodeName {
		t.Errorf("pod %s: node side uid=%s node=%s, API uid=%s node=%s", pod.Name, np.UID, np.Node, pod.UID, pod.Spec.NodeName)
	}
	var want []netip.Addr
	for _, ip := range pod.Status.PodIPs {
		want = append(want, netip.MustParseAddr(ip.IP))
	}
	if len(want) != 2 || !want[0].Is4() || !want[1].Is6() || pod.Status.PodIP != want[0].String() {
		t.Errorf("pod %s: status podIP %q podIPs %v, want one IPv4 then one IPv6", pod.Name, pod.Status.PodIP, pod.Status.PodIPs)
		return
	}
	// The addresses come from the pod's node's CIDRs.
	idx := -1
	for i, n := range lab.NodeNames() {
		if n == pod.Spec.NodeName {
			idx = i
		}
	}
	v4cidr, v6cidr := NodeCIDRs(lab.NetIndex, idx)
	if idx < 0 || !v4cidr.Contains(want[0]) || !v6cidr.Contains(want[1]) {
		t.Errorf("pod %s on %s has %v, want addresses in %s and %s", pod.Name, pod.Spec.NodeName, want, v4cidr, v6cidr)
	}
	var got []netip.Addr
	err := np.InNetns(func() error {
		link, err := netlink.LinkByName(podnet.PodIfName)
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			ip, _ := netip.AddrFromSlice(a.IP)
			if ip = ip.Unmap(); !ip.IsLinkLocalUnicast() {
				got = append(got, ip)
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("pod %s: reading addresses in netns %s: %v", pod.Name, np.NetnsPath, err)
		return
	}
	if len(got) != 2 || !containsAll(got, want) {
		t.Errorf("pod %s: %s in its netns has %v, API shows %v", pod.Name, podnet.PodIfName, got, want)
	}
	if fi, err := os.Stat(np.CgroupPath); err != nil || !fi.IsDir() {
		t.Errorf("pod %s: cgroup %s missing: %v", pod.Name, np.CgroupPath, err)
	} else if ino := fi.Sys().(*syscall.Stat_t).Ino; ino != np.CgroupID {
		t.Errorf("pod %s: cgroup inode %d, CgroupID %d", pod.Name, ino, np.CgroupID)
	}
	if !strings.HasPrefix(np.CgroupPath, filepath.Join(lab.CgroupRoot, pod.Spec.NodeName)+"/") {
		t.Errorf("pod %s: cgroup %s not below its node's root %s", pod.Name, np.CgroupPath, filepath.Join(lab.CgroupRoot, pod.Spec.NodeName))
	}
	if !strings.Contains(np.CgroupPath, strings.ReplaceAll(string(pod.UID), "-", "_")) {
		t.Errorf("pod %s: cgroup %s is not named after UID %s (systemd driver)", pod.Name, np.CgroupPath, pod.UID)
	}
}

func containsAll(have, want []netip.Addr) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

// leftovers lists what the lab with this id still has on the host.
type leftovers struct {
	pids     []int
	dir      string
	netIndex int
}

func snapshotForLeakCheck(lab *Lab) leftovers {
	lo := leftovers{dir: lab.CP.Dir, netIndex: lab.NetIndex}
	for _, pid := range lab.CP.Pids() {
		lo.pids = append(lo.pids, pid)
	}
	for _, p := range lab.Pods() {
		lo.pids = append(lo.pids, p.PausePID)
	}
	if lab.DNS != nil {
		lo.pids = append(lo.pids, lab.DNS.PID())
	}
	return lo
}

// assertNothingLeft checks processes, netns, links, cgroup dirs, mounts and files of a closed lab.
func assertNothingLeft(t *testing.T, id string, lo leftovers) {
	t.Helper()
	for _, pid := range lo.pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d of lab %s still exists after Close (kill 0: %v)", pid, id, err)
		}
	}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if strings.Contains(e.Name(), id) {
				t.Errorf("netns /run/netns/%s left behind", e.Name())
			}
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, id+"-") {
			t.Errorf("link %s left behind", l.Attrs().Name)
		}
	}
	cg2, err := podnet.CgroupV2Mount()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cg2, "isoobs-"+id)); !os.IsNotExist(err) {
		t.Errorf("cgroup dir %s left behind (stat: %v)", filepath.Join(cg2, "isoobs-"+id), err)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, "isoobs-"+id) || (lo.dir != "" && strings.Contains(line, lo.dir)) {
			t.Errorf("mount left behind: %s", line)
		}
	}
	if _, err := os.Stat(lo.dir); !os.IsNotExist(err) {
		t.Errorf("control-plane dir %s left behind", lo.dir)
	}
	if _, err := os.Stat(filepath.Join(podnet.StateRoot, id)); !os.IsNotExist(err) {
		t.Errorf("lab state %s left behind", filepath.Join(podnet.StateRoot, id))
	}
	if lo.netIndex != 0 {
		if _, err := os.Stat(filepath.Join(NetClaimDir, fmt.Sprint(lo.netIndex))); !os.IsNotExist(err) {
			t.Errorf("address-range claim %d left behind", lo.netIndex)
		}
	}
}

// TestLab: Deployment pods and DaemonSet pods on kwok nodes are Running with addresses that
// really exist in their netns; deleted pods lose their node side; Close leaves nothing.
func TestLab(t *testing.T) {
	start := time.Now()
	lab := StartForTest(t, Options{ID: "tlab"})
	t.Logf("lab %s with %d nodes ready in %v (net index %d)", lab.ID, len(lab.Nodes), time.Since(start).Round(time.Millisecond), lab.NetIndex)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := lab.Client()

	nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 3 {
		t.Fatalf("%d nodes in the API, want 3", len(nodes.Items))
	}

	const ns = "labtest"
	if err := lab.Apply(ctx, NewDeployment(ns, "web", 6), NewDaemonSet(ns, "agent")); err != nil {
		t.Fatal(err)
	}
	web, err := lab.WaitPodsReady(ctx, ns, "app=web", 6)
	if err != nil {
		t.Fatal(err)
	}
	perNode := map[string]int{}
	for i := range web {
		perNode[web[i].Spec.NodeName]++
		checkNodeSide(t, lab, &web[i])
	}
	for _, n := range lab.NodeNames() {
		if perNode[n] != 2 {
			t.Errorf("node %s runs %d web pods, want 2 (spread %v)", n, perNode[n], perNode)
		}
	}

	agents, err := lab.WaitPodsReady(ctx, ns, "app=agent", 3)
	if err != nil {
		t.Fatal(err)
	}
	agentNodes := map[string]bool{}
	for i := range agents {
		agentNodes[agents[i].Spec.NodeName] = true
		checkNodeSide(t, lab, &agents[i])
	}
	if len(agentNodes) != 3 {
		t.Errorf("DaemonSet pods on nodes %v, want one on each of %v", agentNodes, lab.NodeNames())
	}

	// A deleted pod loses its veth and cgroup; its replacement is adopted.
	victim := web[0]
	vnp := lab.Pod(ns, victim.Name)
	if err := c.CoreV1().Pods(ns).Delete(ctx, victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := netlink.LinkByName(vnp.HostVeth)
		_, serr := os.Stat(vnp.CgroupPath)
		return err != nil && os.IsNotExist(serr) && lab.Pod(ns, victim.Name) == nil, nil
	})
	if err != nil {
		t.Errorf("deleted pod %s still has its node side (veth %s, cgroup %s)", victim.Name, vnp.HostVeth, vnp.CgroupPath)
	}
	web, err = lab.WaitPodsReady(ctx, ns, "app=web", 6)
	if err != nil {
		t.Fatal(err)
	}
	for i := range web {
		checkNodeSide(t, lab, &web[i])
	}
	if got := len(lab.Pods()); got != 10 {
		t.Errorf("%d adopted pods, want 10 (6 web + 3 agent + coredns)", got)
	}

	t.Run("cluster DNS", func(t *testing.T) { checkClusterDNS(t, lab, web[0].Name) })

	lo := snapshotForLeakCheck(lab)
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, lab.ID, lo)
}

// TestTwoLabsAtOnce: two labs side by side get different ports and address ranges, and closing
// one leaves the other working.
// checkClusterDNS: CoreDNS runs in the kube-system/coredns pod's cgroup and answers on the
// kube-dns ClusterIP with the lab's Services.
func checkClusterDNS(t *testing.T, lab *Lab, clientPod string) {
	ctx := context.Background()
	if lab.DNS == nil {
		t.Fatal("lab has no CoreDNS")
	}
	dnsPods, err := lab.Client().CoreV1().Pods(DNSNamespace).List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=" + DNSAppLabel})
	if err != nil || len(dnsPods.Items) != 1 {
		t.Fatalf("coredns pods: %v %v", dnsPods, err)
	}
	dnsPod := dnsPods.Items[0]
	checkNodeSide(t, lab, &dnsPod)
	np := lab.Pod(DNSNamespace, dnsPod.Name)
	if np.QOSClass != corev1.PodQOSGuaranteed {
		t.Errorf("coredns QoS %s, want Guaranteed", np.QOSClass)
	}
	procs, _ := os.ReadFile(filepath.Join(np.ContainerCgroupPath, "cgroup.procs"))
	if !strings.Contains("\n"+string(procs), fmt.Sprintf("\n%d\n", lab.DNS.PID())) {
		t.Errorf("CoreDNS pid %d is not in its pod's container cgroup %s (procs %q)", lab.DNS.PID(), np.ContainerCgroupPath, procs)
	}
	svc, err := lab.Client().CoreV1().Services(DNSNamespace).Get(ctx, DNSServiceName, metav1.GetOptions{})
	if err != nil || svc.Spec.ClusterIP != lab.DNSServiceIP.String() {
		t.Fatalf("kube-dns service %v (err %v), want ClusterIP %s", svc.Spec.ClusterIP, err, lab.DNSServiceIP)
	}
	client := lab.Pod("labtest", clientPod)
	for name, want := range map[string]string{
		"kube-dns.kube-system.svc.cluster.local": lab.DNSServiceIP.String(),
		"kubernetes.default.svc.cluster.local":   lab.ServiceCIDR.Addr().Next().String(),
	} {
		out, err := client.Command(ctx, "dig", "+short", "+time=2", "+tries=1", "@"+lab.DNSServiceIP.String(), name).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("dig @%s %s from pod %s: %q (err %v), want %s", lab.DNSServiceIP, name, clientPod, out, err, want)
		}
	}
	// The pod's own resolver (resolv.conf the adopter wrote, search list included) reaches CoreDNS.
	out, err := client.Command(ctx, "getent", "hosts", "kube-dns.kube-system").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), lab.DNSServiceIP.String()+" ") {
		t.Errorf("getent hosts kube-dns.kube-system in pod %s: %q (err %v), want %s", clientPod, out, err, lab.DNSServiceIP)
	}
}

func TestTwoLabsAtOnce(t *testing.T) {
	needroot.Require(t, "the lab")
	HandleSignals()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type result struct {
		lab *Lab
		err error
	}
	ids := []string{"tla", "tlb"}
	results := make(chan result, len(ids))
	for _, id := range ids {
		go func() {
			lab, err := Start(ctx, Options{ID: id, Nodes: []string{"node-1", "node-2"}, NoCoreDNS: true, Logf: t.Logf})
			results <- result{lab, err}
		}()
	}
	var labs []*Lab
	for range ids {
		r := <-results
		if r.err != nil {
			t.Error(r.err)
			continue
		}
		labs = append(labs, r.lab)
		t.Cleanup(func() { r.lab.Close() })
	}
	if t.Failed() {
		t.FailNow()
	}
	a, b := labs[0], labs[1]
	if a.CP.APIServerURL == b.CP.APIServerURL || a.NetIndex == b.NetIndex || a.DNSServiceIP == b.DNSServiceIP {
		t.Fatalf("labs collide: %s/%d/%s vs %s/%d/%s", a.CP.APIServerURL, a.NetIndex, a.DNSServiceIP, b.CP.APIServerURL, b.NetIndex, b.DNSServiceIP)
	}
	// Same namespace, pod name and node name in both labs.
	pods := map[*Lab]*corev1.Pod{}
	for _, lab := range labs {
		p := NewPod("default", "same-name", nil)
		p.Spec.NodeName = "node-1"
		if _, err := lab.CreatePod(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, lab := range labs {
		pod, _, err := lab.WaitPodReady(ctx, "default", "same-name")
		if err != nil {
			t.Fatal(err)
		}
		pods[lab] = pod
		checkNodeSide(t, lab, pod)
	}
	if _, err := Start(ctx, Options{ID: "tlc", NetIndex: a.NetIndex, NoCoreDNS: true}); err == nil || !strings.Contains(err.Error(), "pick another") {
		t.Errorf("a third lab on lab %s's address range: %v, want a clear refusal", a.ID, err)
	}
	if pods[a].Status.PodIP == pods[b].Status.PodIP {
		t.Errorf("both labs gave pod IP %s", pods[a].Status.PodIP)
	}

	lo := snapshotForLeakCheck(a)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, a.ID, lo)
	// b is untouched.
	if _, err := b.Client().CoreV1().Pods("default").Get(ctx, "same-name", metav1.GetOptions{}); err != nil {
		t.Errorf("lab %s API after closing %s: %v", b.ID, a.ID, err)
	}
	checkNodeSide(t, b, pods[b])
}

func TestStartRejectsBadOptions(t *testing.T) {
	needroot.Require(t, "the lab")
	ctx := context.Background()
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{ID: "Bad_ID"}, "must be 1-5 characters"},
		{Options{ID: "toolong"}, "must be 1-5 characters"},
		{Options{ID: "ok", Nodes: []string{"a", "a"}}, "listed twice"},
		{Options{ID: "ok", NetIndex: 300}, "outside 1-254"},
	} {
		_, err := Start(ctx, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Start(%+v) = %v, want error containing %q", tc.opts, err, tc.want)
		}
	}
}

// BenchmarkLabColdStart measures a 3-node lab from nothing to ready (control plane, nodes,
// adopter, CoreDNS) and resident memory right after: the five control-plane processes, and the
// whole lab (plus CoreDNS and the pause processes holding pod netns).
// Run: go test ./testlab -run '^$' -bench LabColdStart -benchtime 3x
func BenchmarkLabColdStart(b *testing.B) {
	needroot.Require(b, "the lab")
	HandleSignals()
	var cpRSS, labRSS float64
	for i := 0; b.Loop(); i++ {
		lab, err := Start(context.Background(), Options{ID: fmt.Sprintf("bn%d", i%1000)})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		rss := 0
		for _, pid := range lab.CP.Pids() {
			rss += rssKiB(pid)
		}
		cpRSS += float64(rss) / 1024
		for _, p := range lab.Pods() {
			rss += rssKiB(p.PausePID)
		}
		if lab.DNS != nil {
			rss += rssKiB(lab.DNS.PID())
		}
		labRSS += float64(rss) / 1024
		lab.Close()
		b.StartTimer()
	}
	b.ReportMetric(cpRSS/float64(b.N), "controlplane-RSS-MiB")
	b.ReportMetric(labRSS/float64(b.N), "lab-RSS-MiB")
}

// rssKiB reads VmRSS of a process.
func rssKiB(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kib int
			fmt.Sscanf(strings.TrimPrefix(line, "VmRSS:"), "%d", &kib)
			return kib
		}
	}
	return 0
}

// TestInterruptedLabLeavesNothing: a test process holding a lab gets SIGINT (Ctrl-C on go test);
// its handler must tear the lab down before exiting.
func TestInterruptedLabLeavesNothing(t *testing.T) {
	needroot.Require(t, "the lab")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperLabUntilSignal$", "-test.v")
	cmd.Env = append(os.Environ(), "ISOOBS_LAB_HELPER=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var cpDir string
	var podPIDs []int
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "READY" {
			cpDir = f[1]
			for _, p := range f[2:] {
				pid, _ := strconv.Atoi(p)
				podPIDs = append(podPIDs, pid)
			}
			break
		}
	}
	if cpDir == "" {
		t.Fatal("helper never reported READY")
	}
	lo := leftovers{dir: cpDir, pids: podPIDs}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if data, err := os.ReadFile(p); err == nil && strings.Contains(string(data), cpDir) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			lo.pids = append(lo.pids, pid)
		}
	}
	if len(lo.pids) < 5+2 {
		t.Fatalf("found %d lab processes before the signal, want the 5 components and 2 pause processes", len(lo.pids))
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 130 {
		t.Errorf("helper exit: %v, want status 130", err)
	}
	assertNothingLeft(t, "tsig", lo)
}

func TestHelperLabUntilSignal(t *testing.T) {
	if os.Getenv("ISOOBS_LAB_HELPER") == "" {
		t.Skip("helper for TestInterruptedLabLeavesNothing")
	}
	lab := StartForTest(t, Options{ID: "tsig", Nodes: []string{"n1", "n2"}, NoCoreDNS: true})
	ctx := context.Background()
	var pids []string
	for i, n := range lab.NodeNames() {
		p := NewPod("default", fmt.Sprint("p", i), nil)
		p.Spec.NodeName = n
		if _, err := lab.CreatePod(ctx, p); err != nil {
			t.Fatal(err)
		}
		_, np, err := lab.WaitPodReady(ctx, "default", p.Name)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, fmt.Sprint(np.PausePID))
	}
	fmt.Println("READY", lab.CP.Dir, strings.Join(pids, " "))
	select {}
}
