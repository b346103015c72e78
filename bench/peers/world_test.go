package peers

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/controlplane"
	"github.com/isoobs/isoobs/testlab/dnsgen"
	"github.com/isoobs/isoobs/testlab/needroot"
	"github.com/isoobs/isoobs/testlab/podnet"
)

// peersNode is the one lab node: both DNS servers and every client pod run on it.
const peersNode = "peers-node"

// igVersion is the Inspektor Gadget release the kit builds (testlab/scripts/build-bins.sh ig).
const igVersion = "v0.51.1"

// world is the lab shared by the package's tests: the control plane, CoreDNS, a dnsmasq pod and
// the client pods, plus the binaries.
type world struct {
	lab                             *testlab.Lab
	dir                             string
	dnsgenBin, daemonBin, pluginBin string
	coredns, dnsmasq                netip.AddrPort
	corednsPod, dnsmasqPod          *podnet.Pod
	stopDnsmasq                     func()
	// Client pods in tenant-jobs: loadgen runs dnsperf, crawler floods, recruiter is the
	// background of the flood, ticker sends 5 q/s all the time (so the peers' per-second
	// counters print a frame every second, and as the readiness check of every observer).
	loadgen, crawler, recruiter, ticker *podnet.Pod
	podByIP                             map[string]string // client pod IPv4 -> pod name
	labNet                              netip.Prefix      // the lab's 10.<n>.0.0/16 (tcpdump's filter)
	igOnce                              sync.Once
	igDir, igKit                        string
	igErr                               error
}

// ig returns the cached ig build, building it on first use (see ensureIG).
func (w *world) ig() (dir, kit string, err error) {
	w.igOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
		defer cancel()
		w.igDir, w.igKit, w.igErr = ensureIG(ctx)
	})
	return w.igDir, w.igKit, w.igErr
}

var (
	worldOnce sync.Once
	theWorld  *world
	worldErr  error
)

func TestMain(m *testing.M) {
	testlab.HandleSignals()
	code := m.Run()
	if theWorld != nil {
		theWorld.close()
	}
	os.Exit(code)
}

func getWorld(t *testing.T) *world {
	t.Helper()
	needroot.Require(t, "eBPF, netns, cgroups, packet capture")
	worldOnce.Do(func() { theWorld, worldErr = startWorld() })
	if worldErr != nil {
		t.Fatal(worldErr)
	}
	return theWorld
}

func (w *world) close() {
	if w.stopDnsmasq != nil {
		w.stopDnsmasq()
	}
	if w.lab != nil {
		w.lab.Close()
	}
	os.RemoveAll(w.dir)
}

func startWorld() (_ *world, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	w := &world{podByIP: map[string]string{}}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	for _, tool := range []string{"dnsperf", "tcpdump", "dnsmasq", "awk", "unshare", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is missing: run `make deps` (hack/deps.sh installs it)", tool)
		}
	}
	if w.dir, err = os.MkdirTemp("", "isoobs-peers-"); err != nil {
		return nil, err
	}
	if w.dnsgenBin, err = dnsgen.BuildBinary(ctx, w.dir); err != nil {
		return nil, err
	}
	root, err := controlplane.RepoRoot()
	if err != nil {
		return nil, err
	}
	for _, b := range []struct {
		out       *string
		pkg, name string
	}{{&w.daemonBin, "./cmd/isoobs-daemon", "isoobs-daemon"}, {&w.pluginBin, "./cmd/kubectl-isoobs", "kubectl-isoobs"}} {
		*b.out = filepath.Join(w.dir, b.name)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", *b.out, b.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build %s: %v\n%s", b.pkg, err, out)
		}
	}
	if w.lab, err = testlab.Start(ctx, testlab.Options{Nodes: []string{peersNode}}); err != nil {
		return nil, err
	}
	w.labNet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(w.lab.NetIndex), 0, 0}), 16)
	w.coredns = netip.AddrPortFrom(w.lab.DNSServiceIP, 53)
	w.corednsPod = w.lab.DNS.Pod
	if err := w.lab.Apply(ctx, testlab.NewDeployment("kube-system", "dnsmasq", 1)); err != nil {
		return nil, err
	}
	for _, d := range []string{"loadgen", "crawler", "recruiter", "ticker"} {
		if err := w.lab.Apply(ctx, testlab.NewDeployment("tenant-jobs", d, 1)); err != nil {
			return nil, err
		}
	}
	for _, d := range []struct {
		ns, app string
		pod     **podnet.Pod
	}{{"kube-system", "dnsmasq", &w.dnsmasqPod}, {"tenant-jobs", "loadgen", &w.loadgen}, {"tenant-jobs", "crawler", &w.crawler},
		{"tenant-jobs", "recruiter", &w.recruiter}, {"tenant-jobs", "ticker", &w.ticker}} {
		pods, err := w.lab.WaitPodsReady(ctx, d.ns, "app="+d.app, 1)
		if err != nil {
			return nil, err
		}
		if *d.pod = w.lab.Pod(d.ns, pods[0].Name); *d.pod == nil {
			return nil, fmt.Errorf("pod %s/%s not adopted", d.ns, pods[0].Name)
		}
	}
	for _, p := range []*podnet.Pod{w.loadgen, w.crawler, w.recruiter, w.ticker} {
		w.podByIP[p.IPv4.String()] = p.Name
	}
	if err := w.startDnsmasq(); err != nil {
		return nil, err
	}
	return w, nil
}

// startDnsmasq runs Debian's dnsmasq as the dnsmasq pod's process, answering every name
// itself (no upstream, no cache: every query is work), like the peer kit's.
func (w *world) startDnsmasq() error {
	ctx, cancel := context.WithCancel(context.Background())
	ip := w.dnsmasqPod.IPv4
	cmd := w.dnsmasqPod.Command(ctx, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--no-poll", "--bind-interfaces", "--listen-address="+ip.String(), "--port=53", "--address=/#/198.51.100.53",
		"--cache-size=0", "--dns-forward-max=10000", "--user=root", "--pid-file=", "--log-facility=-")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		cancel()
		return fmt.Errorf("dnsmasq: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	w.stopDnsmasq = func() { cancel(); <-done }
	w.dnsmasq = netip.AddrPortFrom(ip, 53)
	// Answering?
	deadline := time.Now().Add(15 * time.Second)
	for {
		rep, err := dnsgen.RunInPod(context.Background(), w.ticker, w.dnsgenBin, dnsgen.Config{Server: w.dnsmasq,
			Names: []string{"ready.example"}, Count: 1, Timeout: time.Second})
		if err == nil && rep.Answered == 1 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dnsmasq in pod %s never answered: %v", w.dnsmasqPod, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// ensureIG returns the cached ig build (IGW dir with ig and its OCI store) and the kit, running
// testlab/scripts/build-bins.sh ig when missing (~12 min cold, once).
func ensureIG(ctx context.Context) (dir, kit string, err error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return "", "", err
	}
	kit = os.Getenv("ISOOBS_IG_KIT")
	if kit == "" {
		kit = filepath.Join(root, "..", "shared", "peers", "inspektor-gadget")
	}
	if _, err := os.Stat(filepath.Join(kit, "igw")); err != nil {
		return "", "", fmt.Errorf("no Inspektor Gadget kit at %s (set ISOOBS_IG_KIT): %v", kit, err)
	}
	dir = filepath.Join(controlplane.CacheDir(), "bin", "ig-"+igVersion)
	if _, err := os.Stat(filepath.Join(dir, "varlib", "ig", "oci-store", "index.json")); err == nil {
		return dir, kit, nil
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "testlab", "scripts", "build-bins.sh"), "ig")
	cmd.Env = append(os.Environ(), "ISOOBS_IG_KIT="+kit)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("build-bins.sh ig: %v\n%s", err, out)
	}
	return dir, kit, nil
}

// cgroupCPU is the CPU time of every process in a cgroup v2 directory and below (cpu.stat
// usage_usec, present without the cpu controller).
func cgroupCPU(dir string) (time.Duration, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return time.Duration(n) * time.Microsecond, err
		}
	}
	return 0, fmt.Errorf("%s/cpu.stat has no usage_usec", dir)
}
