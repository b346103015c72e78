// isoobs-demo plays the seed 000 incident on the local lab: the jobs-app runs in tenant-jobs
// with light, normal DNS; then the crawler floods CoreDNS with random names that end in
// NXDOMAIN, and `kubectl isoobs top dns` — reading one real isoobs daemon per lab node —
// names it within seconds, in cluster mode: through the API server's port-forward into the
// daemon pods of the real chart. In a second act the crawler also hammers a service that resets
// every connection, and `kubectl isoobs top tcp` names the crawler, the service's pod as its top
// peer and the resets, exactly. Everything is cleaned up at the end (also on Ctrl-C).
//
// With --real-node (make demo REAL_NODE=1) the lab also has a real kubelet + containerd node:
// the chart's daemon runs there as a real container from its digest-pinned image (built
// locally, imported, nothing pulled), and the crawler is moved onto that node as a real
// container whose flood is started with `exec` through the API server and the kubelet.
//
// Run it with `make demo` (root).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/isoobs/isoobs/plugin/cluster"
	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/dnsgen"
	"github.com/isoobs/isoobs/testlab/labdaemons"
	"github.com/isoobs/isoobs/testlab/scenario"
)

func main() {
	runDemoHelper() // this binary started again inside a pod for the TCP act
	calm := flag.Duration("calm", 4*time.Second, "normal traffic before the flood")
	flood := flag.Duration("flood", 8*time.Second, "how long the crawler floods")
	floodQPS := flag.Float64("flood-qps", 3000, "the crawler's query rate")
	keep := flag.Bool("keep", false, "keep the lab running at the end until Ctrl-C")
	realNode := flag.Bool("real-node", false, "run the daemon and the crawler as real containers on a real kubelet node")
	flag.Parse()
	if os.Geteuid() != 0 {
		fail("the demo builds network namespaces, cgroups and eBPF programs: run it as root (sudo make demo)")
	}
	testlab.HandleSignals()
	if err := run(*calm, *flood, *floodQPS, *keep, *realNode); err != nil {
		testlab.CloseAll()
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "isoobs-demo:", msg)
	os.Exit(1)
}

func step(format string, args ...any) {
	fmt.Printf("\n\033[1m==> "+format+"\033[0m\n", args...)
}

func run(calm, flood time.Duration, floodQPS float64, keep, realNode bool) error {
	ctx := context.Background()
	work, err := os.MkdirTemp("", "isoobs-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	step("building kubectl-isoobs, isoobs-daemon and the DNS load generator")
	bin := filepath.Join(work, "bin")
	for _, b := range [][2]string{{"kubectl-isoobs", "github.com/isoobs/isoobs/cmd/kubectl-isoobs"}, {"isoobs-daemon", "github.com/isoobs/isoobs/cmd/isoobs-daemon"}} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, b[0]), b[1]).CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", b[1], err, out)
		}
	}
	gen, err := dnsgen.BuildBinary(ctx, bin)
	if err != nil {
		return err
	}

	var images *realImages
	if realNode {
		step("building the daemon image (release/image, digest-pinned by the chart) and the crawler image")
		start := time.Now()
		if images, err = buildImages(ctx, work); err != nil {
			return err
		}
		fmt.Printf("%s and %s in %.1fs\n", images.daemon.Reference, crawlerImage, time.Since(start).Seconds())
	}

	what := "kwok nodes, CoreDNS"
	if realNode {
		what += ", a real kubelet + containerd node"
	}
	step("starting the lab: kube-apiserver, etcd, controller-manager, scheduler, %s", what)
	start := time.Now()
	lab, err := testlab.Start(ctx, testlab.Options{ID: "demo", Dir: filepath.Join(work, "lab"), RealNode: realNode})
	if err != nil {
		return err
	}
	defer lab.Close()
	fmt.Printf("lab up in %.1fs; KUBECONFIG=%s\n", time.Since(start).Seconds(), lab.Kubeconfig())
	if realNode {
		start := time.Now()
		for _, tar := range []string{images.daemon.OCIArchive, images.crawler} {
			if err := lab.Real.ImportImage(ctx, tar); err != nil {
				return err
			}
		}
		fmt.Printf("images imported into %s's containerd in %.1fs\n", lab.Real.Name, time.Since(start).Seconds())
	}

	step("deploying jobs-app into tenant-jobs (seed 000)")
	app, err := scenario.Apply(ctx, lab)
	if err != nil {
		return err
	}
	var realCrawler *corev1.Pod
	if realNode {
		if realCrawler, err = moveCrawler(ctx, lab); err != nil {
			return err
		}
	}
	if err := kubectlTo(lab, "get", "pods", "-A", "-o", "wide"); err != nil {
		return err
	}

	step("the isoobs DaemonSet: one daemon pod per node (the real chart), each reached through the API server's port-forward")
	daemons, err := labdaemons.Start(ctx, lab, labdaemons.Options{Binary: filepath.Join(bin, "isoobs-daemon"),
		// No Cilium in the lab: the daemons run on their eBPF probes alone, as on a cluster without Hubble.
		ExtraArgs: []string{"--hubble-server", "off"}})
	if err != nil {
		return err
	}
	defer daemons.Close()
	for _, name := range lab.NodeNames() {
		fmt.Printf("  %-14s eBPF probe at cgroup root %s\n", name, lab.Node(name).CgroupRoot())
	}
	if realNode {
		fmt.Printf("  %-14s the chart's container (%s), real kubelet port-forward\n", lab.Real.Name, images.daemon.Reference)
	}
	if err := kubectlTo(lab, "get", "pods", "-n", cluster.DefaultNamespace, "-o", "wide"); err != nil {
		return err
	}
	if err := runTo(exec.Command(filepath.Join(bin, "kubectl-isoobs"), "status", "--kubeconfig", lab.Kubeconfig())); err != nil {
		return err
	}

	dns := netip.AddrPortFrom(lab.DNSServiceIP, 53)
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	defer stopTraffic()
	var wg sync.WaitGroup
	total := calm + flood + 3*time.Second
	step("normal traffic: every jobs-app pod resolves the app's Services a few times a second")
	for _, p := range app.NormalPods() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = dnsgen.RunInPod(trafficCtx, p.Net, gen, dnsgen.Config{Server: dns, Names: scenario.ServiceNames("cluster.local"),
				QPS: 5, Duration: total})
		}()
	}
	top := func(extra ...string) *exec.Cmd {
		args := append([]string{"top", "dns", "-A", "--kubeconfig", lab.Kubeconfig()}, extra...)
		return exec.Command(filepath.Join(bin, "kubectl-isoobs"), args...)
	}
	time.Sleep(calm)
	step("kubectl isoobs top dns -A --once   (calm: nobody stands out)")
	if err := runTo(top("--once", "--limit", "8")); err != nil {
		return err
	}

	step("the crawler starts flooding CoreDNS: %.0f random names/s under crawl.jobs-app.example (NXDOMAIN)", floodQPS)
	crawler := app.CrawlerPod()
	crawlerName := crawler.API.Name
	if realCrawler != nil {
		crawlerName = realCrawler.Name
	}
	// What the cluster counted for the crawler before its flood: the flood's queries are counted
	// on top of it, exactly.
	crawlerQueries := func() (uint64, error) {
		out, err := top("-o", "json", "--once", "--group-by", "pod").Output()
		if err != nil {
			return 0, fmt.Errorf("kubectl isoobs top dns -o json --once: %w", err)
		}
		var f struct {
			Rows []struct {
				Pod     string `json:"pod"`
				Queries uint64 `json:"queries"`
			} `json:"rows"`
		}
		if err := json.Unmarshal(out, &f); err != nil {
			return 0, fmt.Errorf("kubectl isoobs top dns -o json --once: %w", err)
		}
		for _, r := range f.Rows {
			if r.Pod == crawlerName {
				return r.Queries, nil
			}
		}
		return 0, nil
	}
	before, err := crawlerQueries()
	if err != nil {
		return err
	}
	// The machine-readable view measures when the crawler is ranked first.
	watch := top("-o", "json", "--interval", "500ms", "--sort", "qps")
	watchOut, _ := watch.StdoutPipe()
	if err := watch.Start(); err != nil {
		return err
	}
	floodStart := time.Now()
	rankedFirst := make(chan time.Duration, 1)
	go func() {
		sc := bufio.NewScanner(watchOut)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var f struct {
				Rows []struct{ Namespace, Pod, Workload string } `json:"rows"`
			}
			if json.Unmarshal(sc.Bytes(), &f) == nil && len(f.Rows) > 0 && f.Rows[0].Pod == crawlerName {
				rankedFirst <- time.Since(floodStart)
				return
			}
		}
	}()
	var floodReport *dnsgen.Report
	var floodErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		cfg := dnsgen.Config{Server: dns, RandomSuffix: "crawl.jobs-app.example", QPS: floodQPS, Concurrency: 32, Duration: flood, Timeout: time.Second}
		if realCrawler != nil {
			floodReport, floodErr = execDNSGen(trafficCtx, lab, realCrawler, cfg)
			return
		}
		floodReport, floodErr = dnsgen.RunInPod(trafficCtx, crawler.Net, gen, cfg)
	}()
	var notFirst error
	select {
	case d := <-rankedFirst:
		fmt.Printf("tenant-jobs/%s ranked first %.2fs after the flood started\n", crawlerName, d.Seconds())
	case <-time.After(10 * time.Second):
		notFirst = fmt.Errorf("the crawler %s was not ranked first within 10 s of its flood", crawlerName)
		fmt.Println("crawler NOT ranked first within 10s")
	}
	_ = watch.Process.Kill()
	_ = watch.Wait()

	step("kubectl isoobs top dns -A --duration 3s   (counted over 3 s while the flood goes on)")
	if err := runTo(top("--duration", "3s", "--limit", "8")); err != nil {
		return err
	}
	step("kubectl isoobs top dns -A --group-by workload --once")
	if err := runTo(top("--group-by", "workload", "--once", "--limit", "8")); err != nil {
		return err
	}
	wg.Wait()
	if floodErr != nil {
		return fmt.Errorf("crawler flood: %w", floodErr)
	}
	step("ground truth from the crawler's own generator")
	fmt.Printf("sent %d  answered %d  NXDOMAIN %d  SERVFAIL %d  timeouts %d  p50 %.2fms p99 %.2fms\n",
		floodReport.Sent, floodReport.Answered, floodReport.RCodes.NXDomain, floodReport.RCodes.ServFail,
		floodReport.Timeouts, floodReport.Latency.P50Micros/1000, floodReport.Latency.P99Micros/1000)
	// Every query the crawler sent is counted once: the daemons' count catches up within a tick.
	var counted uint64
	deadline := time.Now().Add(10 * time.Second)
	for {
		after, err := crawlerQueries()
		if err != nil {
			return err
		}
		counted = after - before
		if counted == floodReport.Sent || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	exact := counted == floodReport.Sent
	fmt.Printf("isoobs counted %d of the crawler's %d queries: exact %v\n", counted, floodReport.Sent, exact)
	var tcpErr error
	if realCrawler == nil {
		tcpErr = tcpAct(ctx, app, bin, lab.Kubeconfig())
	} else {
		step("act two (the crawler's connections reset) runs on the plain lab only: the crawler is a real container here")
	}
	if keep {
		step("lab kept: KUBECONFIG=%s — Ctrl-C to clean up", lab.Kubeconfig())
		select {}
	}
	step("cleaning up")
	if notFirst != nil {
		return notFirst
	}
	if !exact {
		return fmt.Errorf("isoobs counted %d of the crawler's %d queries", counted, floodReport.Sent)
	}
	return tcpErr
}

func runTo(cmd *exec.Cmd) error {
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	fmt.Printf("$ kubectl isoobs %s\n", strings.Join(cmd.Args[1:], " "))
	return cmd.Run()
}

func kubectlTo(lab *testlab.Lab, args ...string) error {
	cmd := exec.Command("kubectl", append([]string{"--kubeconfig", lab.Kubeconfig()}, args...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	fmt.Printf("$ kubectl %s\n", strings.Join(args, " "))
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
	}
	return nil
}
