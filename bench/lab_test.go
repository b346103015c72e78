package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isoobs/isoobs/bpf"
	"github.com/isoobs/isoobs/deploy"
	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/dnsgen"
	"github.com/isoobs/isoobs/testlab/needroot"
	"github.com/isoobs/isoobs/testlab/podnet"
)

// benchNode is the one lab node: CoreDNS and every load pod run on it, so one
// daemon (or probe) on its cgroup root sees clients and server.
const benchNode = "bench-node"

// world is the lab and the binaries shared by every benchmark of the package
// (starting a control plane per benchmark would dominate the run time).
type world struct {
	lab       *testlab.Lab
	dir       string // binaries
	dnsgenBin string
	daemonBin string
	pluginBin string
	dns       netip.AddrPort
	// Load pods, all in tenant-jobs on benchNode.
	crawler, recruiter, loadgen *podnet.Pod
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
		theWorld.lab.Close()
		os.RemoveAll(theWorld.dir)
	}
	os.Exit(code)
}

// getWorld starts the shared lab on first use.
func getWorld(b *testing.B) *world {
	b.Helper()
	needroot.Require(b, "eBPF, netns, cgroups")
	worldOnce.Do(func() { theWorld, worldErr = startWorld() })
	if worldErr != nil {
		b.Fatal(worldErr)
	}
	return theWorld
}

func startWorld() (*world, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	w := &world{}
	var err error
	if w.dir, err = os.MkdirTemp("", "isoobs-bench-"); err != nil {
		return nil, err
	}
	if w.dnsgenBin, err = dnsgen.BuildBinary(ctx, w.dir); err != nil {
		return nil, err
	}
	for _, t := range []struct {
		out       *string
		pkg, name string
	}{
		{&w.daemonBin, "./cmd/isoobs-daemon", "isoobs-daemon"},
		{&w.pluginBin, "./cmd/kubectl-isoobs", "kubectl-isoobs"},
	} {
		*t.out = filepath.Join(w.dir, t.name)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", *t.out, t.pkg)
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build %s: %v\n%s", t.pkg, err, out)
		}
	}
	w.lab, err = testlab.Start(ctx, testlab.Options{Nodes: []string{benchNode}})
	if err != nil {
		return nil, err
	}
	w.dns = netip.AddrPortFrom(w.lab.DNSServiceIP, 53)
	for _, d := range []string{"crawler", "recruiter", "loadgen"} {
		if err := w.lab.Apply(ctx, testlab.NewDeployment("tenant-jobs", d, 1)); err != nil {
			w.lab.Close()
			return nil, err
		}
	}
	for _, d := range []struct {
		app string
		pod **podnet.Pod
	}{{"crawler", &w.crawler}, {"recruiter", &w.recruiter}, {"loadgen", &w.loadgen}} {
		pods, err := w.lab.WaitPodsReady(ctx, "tenant-jobs", "app="+d.app, 1)
		if err != nil {
			w.lab.Close()
			return nil, err
		}
		if *d.pod = w.lab.Pod("tenant-jobs", pods[0].Name); *d.pod == nil {
			w.lab.Close()
			return nil, fmt.Errorf("pod %s not adopted", pods[0].Name)
		}
	}
	return w, nil
}

// podCounters sums the probe's counters of a pod's cgroup and the cgroups
// below it (its processes run in a container cgroup).
func podCounters(all map[uint64]bpf.PodCounters, p *podnet.Pod) (queries, responses uint64) {
	for _, id := range []uint64{p.CgroupID, p.ContainerCgroupID} {
		c := all[id]
		queries += c.Queries
		responses += c.Responses
	}
	return queries, responses
}

// daemonProc is the isoobs daemon binary running for benchNode, as on a node.
type daemonProc struct {
	cmd     *exec.Cmd
	addr    string // gRPC host:port
	metrics string // /metrics, /healthz host:port ("" when off)
	pid     int
}

// daemonOptions are what a benchmark changes from startDaemon's defaults.
type daemonOptions struct {
	metrics    bool   // serve /metrics and /healthz on a free loopback port
	goMemLimit string // GOMEMLIMIT for the daemon only ("": ISOOBS_BENCH_DAEMON_GOMEMLIMIT)
}

// chartGoMemLimit is the GOMEMLIMIT the chart gives the daemon by default (values.yaml).
func chartGoMemLimit(b *testing.B) string {
	b.Helper()
	vals, err := deploy.DefaultValues()
	if err != nil {
		b.Fatal(err)
	}
	v, _ := vals["goMemLimit"].(string)
	return v
}

func startDaemon(b *testing.B, w *world) *daemonProc {
	return startDaemonWith(b, w, daemonOptions{})
}

func startDaemonWith(b *testing.B, w *world, o daemonOptions) *daemonProc {
	b.Helper()
	addr, metrics := freePort(b), ""
	if o.metrics {
		metrics = freePort(b)
	}
	cmd := exec.Command(w.daemonBin,
		"--node-name", benchNode,
		"--cgroup-root", w.lab.Node(benchNode).CgroupRoot(),
		"--kubeconfig", w.lab.Kubeconfig(),
		"--grpc-listen", addr,
		"--metrics-listen", metrics,
		"--hubble-server", "off",
		"--log-level", "warn")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// The chart's soft memory limit, for the daemon only: GOMEMLIMIT set for
	// the whole benchmark would also slow CoreDNS and the load generators.
	if o.goMemLimit == "" {
		o.goMemLimit = os.Getenv("ISOOBS_BENCH_DAEMON_GOMEMLIMIT")
	}
	if o.goMemLimit != "" && o.goMemLimit != "none" { // none: Go's default, no limit
		cmd.Env = append(os.Environ(), "GOMEMLIMIT="+o.goMemLimit)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	d := &daemonProc{cmd: cmd, addr: addr, metrics: metrics, pid: cmd.Process.Pid}
	b.Cleanup(func() { d.stop() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return d
		}
		if time.Now().After(deadline) {
			b.Fatalf("daemon never listened on %s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *daemonProc) stop() {
	if d.cmd.ProcessState == nil {
		d.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			<-done
		}
	}
}

// cpuTime is the CPU time of all the process's threads, in ns resolution:
// the first field of /proc/<pid>/task/<tid>/schedstat (utime+stime of
// /proc/<pid>/stat count 10 ms ticks, too coarse for a mostly idle daemon).
func (d *daemonProc) cpuTime(b *testing.B) time.Duration {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", d.pid))
	if err != nil || len(tasks) == 0 {
		b.Fatalf("daemon threads of pid %d: %v", d.pid, err)
	}
	var sum time.Duration
	for _, t := range tasks {
		raw, err := os.ReadFile(t)
		if err != nil {
			continue // thread exited
		}
		f := strings.Fields(string(raw))
		ns, _ := strconv.ParseInt(f[0], 10, 64)
		sum += time.Duration(ns)
	}
	return sum
}

// memKiB reads VmRSS and VmHWM (peak RSS) from /proc/<pid>/status.
func (d *daemonProc) memKiB(b *testing.B) (rss, hwm uint64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", d.pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, hwm
}

func freePort(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
