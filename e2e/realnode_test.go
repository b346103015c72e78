//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/isoobs/isoobs/deploy"
	"github.com/isoobs/isoobs/plugin"
	"github.com/isoobs/isoobs/plugin/cluster"
	"github.com/isoobs/isoobs/plugin/top"
	"github.com/isoobs/isoobs/release/image"
	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/controlplane"
	"github.com/isoobs/isoobs/testlab/dnsgen"
	"github.com/isoobs/isoobs/testlab/labdaemons"
	"github.com/isoobs/isoobs/testlab/needroot"
	"github.com/isoobs/isoobs/testlab/realnode"
)

// Chart-facing facts the real node must show for the daemon container.
const (
	// CapEff of drop ALL + NET_ADMIN (12) + PERFMON (38) + BPF (39).
	wantCapEff     = "000000c000001000"
	realNodeImage  = "isoobs.local/dnsgen:lab"
	realNodeDNSGen = "dnsgen"
	realNodeNS     = "realnode-e2e"
	realNodeCount  = 2000
	imageVersion   = "v0.0.0-realnode"
)

// runPlugin runs `kubectl isoobs ARGS --kubeconfig K` in this process.
func runPlugin(ctx context.Context, kubeconfig string, args ...string) (string, string, error) {
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	root := plugin.NewRootCmd(streams)
	root.SetArgs(append(args, "--kubeconfig", kubeconfig))
	err := root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// TestRealNodeDaemonChart is issue 13's part 3: the chart, installed by `kubectl isoobs
// install` with its digest-pinned image (built by release/image, imported into containerd,
// nothing pulled), runs the daemon as a real container on a real kubelet; a real workload pod
// there floods CoreDNS and `top dns` counts it exactly through API server → kubelet →
// containerd port-forward; status and verify pass; uninstall removes it all. The host is
// checked for leftovers after the lab is gone.
func TestRealNodeDaemonChart(t *testing.T) {
	needroot.Require(t, "the real node runs a kubelet and containerd and the daemon loads eBPF")
	before := realnode.TakeSnapshot()
	t.Cleanup(func() { // runs after the lab's Close (cleanups are LIFO)
		var left []string
		for _, d := range realnode.TakeSnapshot().Diff(before) {
			// podnet switches forwarding on for every lab and leaves it on (not the real node's).
			if !strings.Contains(d, "sysctl net/ipv4/ip_forward") && !strings.Contains(d, "sysctl net/ipv6/conf/all/forwarding") {
				left = append(left, d)
			}
		}
		if len(left) > 0 {
			t.Errorf("the real node left on the host:\n%s", strings.Join(left, "\n"))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	if _, err := realnode.EnsureBinaries(); err != nil {
		t.Fatal(err)
	}
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()

	// The daemon image as `make image` makes it (this host's platform only, for time).
	t0 := time.Now()
	res, err := image.Build(ctx, image.Options{RepoRoot: root, Version: imageVersion, Commit: "realnode-e2e",
		Date: time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC), Platforms: []string{"linux/" + runtime.GOARCH}, OutDir: filepath.Join(work, "image")})
	if err != nil {
		t.Fatal(err)
	}
	workload, err := realnode.BuildGoImage(ctx, work, "./testlab/cmd/dnsgen", realNodeImage)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("timing: daemon image %s (index %s) and dnsgen image built in %s", res.Reference, res.IndexDigest, time.Since(t0).Round(time.Millisecond))
	// The plugin as a release build stamps it: the chart pins the index digest.
	oldRepo, oldTag, oldDigest := deploy.DaemonImageRepository, deploy.DaemonImageTag, deploy.DaemonImageDigest
	deploy.DaemonImageRepository, deploy.DaemonImageTag, deploy.DaemonImageDigest = image.DefaultRepository, imageVersion, res.IndexDigest
	t.Cleanup(func() {
		deploy.DaemonImageRepository, deploy.DaemonImageTag, deploy.DaemonImageDigest = oldRepo, oldTag, oldDigest
	})

	t0 = time.Now()
	// One kwok node for CoreDNS (an emulated pod); the daemon there is the lab's host process.
	lab := testlab.StartForTest(t, testlab.Options{RealNode: true, Nodes: []string{"rn-kwok-a"}})
	t.Logf("timing: lab + real node up in %s (real node: %v)", time.Since(t0).Round(time.Millisecond), lab.Real.Timings)
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{lab.Real.KubeletLog(), lab.Real.ContainerdLog()} {
				if b, err := os.ReadFile(f); err == nil {
					t.Logf("last lines of %s:\n%s", f, tailLines(string(b), 40))
				}
			}
		}
	})
	client := lab.Client()
	real := lab.Real.Name

	t0 = time.Now()
	for _, tar := range []string{res.OCIArchive, workload} {
		if err := lab.Real.ImportImage(ctx, tar); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("timing: images imported in %s", time.Since(t0).Round(time.Millisecond))
	if ok, err := lab.Real.HasImage(ctx, res.Reference); err != nil || !ok {
		t.Fatalf("containerd has no image named %s after the import (%v)", res.Reference, err)
	}

	t0 = time.Now()
	if out, errOut, err := runPlugin(ctx, lab.Kubeconfig(), "install", "--components", "isoobs"); err != nil {
		t.Fatalf("kubectl isoobs install: %v\n%s\n%s", err, out, errOut)
	}
	dpod := waitRealDaemonReady(t, ctx, lab)
	t.Logf("timing: install -> daemon pod %s Running and Ready on %s in %s", dpod.Name, real, time.Since(t0).Round(time.Millisecond))
	if img := dpod.Spec.Containers[0].Image; img != res.Reference && !strings.HasSuffix(img, "@"+res.IndexDigest) {
		t.Errorf("daemon image %q, want the digest-pinned %s", img, res.Reference)
	}

	checkDaemonContainer(t, ctx, lab, dpod)
	// A host without Cilium must not get Cilium's run directory from the chart (the real node
	// removes it again on Close, so only this check sees it).
	if _, had := before["path /run/cilium"]; !had {
		if _, err := os.Stat("/run/cilium"); err == nil {
			t.Errorf("the chart's hostPath created /var/run/cilium on a node without Cilium")
		}
	}

	// The kwok node's daemon pod gets the lab's host daemon (same static binary as the image).
	daemons, err := labdaemons.Attach(ctx, lab, labdaemons.Options{Binary: res.Images[0].Binary, ExtraArgs: []string{"--hubble-server", "off"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(daemons.Close)

	// Every daemon answers through the port-forward before the measured window.
	testlab.WaitFor(t, 60*time.Second, func() error {
		f, err := topDNSFrame(ctx, lab.Kubeconfig(), "--once")
		if err != nil {
			return err
		}
		if len(f.Nodes) != 2 || len(f.MissingNodes) != 0 {
			return fmt.Errorf("nodes %v missing %+v", f.Nodes, f.MissingNodes)
		}
		return nil
	})

	// The workload: dnsgen as a real container on the real node, exactly realNodeCount queries.
	gen := dnsgen.Config{Server: netip.AddrPortFrom(lab.DNSServiceIP, 53), RandomSuffix: "crawl.jobs-app.example",
		Count: realNodeCount, QPS: 2000, Concurrency: 8, Timeout: 500 * time.Millisecond, Seed: 13}
	type frameResult struct {
		f   top.Frame
		err error
	}
	done := make(chan frameResult, 1)
	go func() {
		f, err := topDNSFrame(ctx, lab.Kubeconfig(), "--duration", "25s")
		done <- frameResult{f, err}
	}()
	time.Sleep(time.Second)
	if err := lab.EnsureNamespace(ctx, realNodeNS); err != nil {
		t.Fatal(err)
	}
	created := time.Now()
	wpod, err := client.CoreV1().Pods(realNodeNS).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: realNodeDNSGen, Namespace: realNodeNS, Labels: map[string]string{"app": realNodeDNSGen}},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{realnode.Label: "true"},
			Tolerations:                   []corev1.Toleration{realnode.Toleration},
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{Name: realNodeDNSGen, Image: realNodeImage, ImagePullPolicy: corev1.PullNever,
				Args: gen.Args()}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var finished time.Time
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 40*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(realNodeNS).Get(ctx, realNodeDNSGen, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		wpod = p
		switch p.Status.Phase {
		case corev1.PodSucceeded:
			finished = time.Now()
			return true, nil
		case corev1.PodFailed:
			return false, fmt.Errorf("dnsgen pod failed: %s", podState(p))
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("dnsgen pod on %s: %v (%s)", real, err, podState(wpod))
	}
	if wpod.Spec.NodeName != real {
		t.Fatalf("dnsgen pod ran on %q, want %s", wpod.Spec.NodeName, real)
	}
	// Ground truth: the generator's report, read as `kubectl logs` reads it (API → kubelet).
	logs, err := client.CoreV1().Pods(realNodeNS).GetLogs(realNodeDNSGen, &corev1.PodLogOptions{Container: realNodeDNSGen}).DoRaw(ctx)
	if err != nil {
		t.Fatalf("logs of the dnsgen pod: %v", err)
	}
	var rep dnsgen.Report
	if err := json.Unmarshal(jsonPart(logs), &rep); err != nil {
		t.Fatalf("dnsgen report: %v\n%s", err, logs)
	}
	if rep.Sent != realNodeCount || rep.Answered != rep.Sent {
		t.Errorf("generator: sent %d answered %d of %d; the comparison wants a clean run", rep.Sent, rep.Answered, realNodeCount)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("top dns: %v", r.err)
	}
	f := r.f
	if f.Since.After(created) || f.Time.Before(finished) {
		t.Fatalf("the pod's life [%s, %s] is not inside the frame's window [%s, %s]", created.Format(time.StampMicro),
			finished.Format(time.StampMicro), f.Since.Format(time.StampMicro), f.Time.Format(time.StampMicro))
	}
	var row *top.Row
	var served uint64
	for i := range f.Rows {
		if f.Rows[i].Namespace == realNodeNS && f.Rows[i].Pod == realNodeDNSGen {
			row = &f.Rows[i]
		}
		served += f.Rows[i].ServedQueries
	}
	if row == nil {
		t.Fatalf("top dns has no row for %s/%s; rows %+v, missing %+v", realNodeNS, realNodeDNSGen, f.Rows, f.MissingNodes)
	}
	if row.Node != real || row.Queries != rep.Sent || row.Responses != rep.Answered || row.NXDomain != rep.RCodes.NXDomain {
		t.Errorf("top dns row on %s: queries %d responses %d nxdomain %d; generator: sent %d answered %d nxdomain %d",
			row.Node, row.Queries, row.Responses, row.NXDomain, rep.Sent, rep.Answered, rep.RCodes.NXDomain)
	}
	// Not asserted: both "nodes" share this kernel's cgroup v2 tree, and the real node's daemon
	// (cgroup root /sys/fs/cgroup/unified) also sees CoreDNS's cgroup on the kwok node, so the
	// merged frame counts CoreDNS's answers once per daemon (a lab artifact: on a cluster a
	// pod's cgroup exists on its own node only).
	t.Logf("CoreDNS served %d queries in the window as the daemons report it (the pod sent %d)", served, rep.Sent)
	t.Logf("top dns: %s/%s on %s: %d queries, %d responses, %d NXDOMAIN (generator: %d sent, %d answered, %d NXDOMAIN; pod %s from create to Succeeded)",
		realNodeNS, realNodeDNSGen, row.Node, row.Queries, row.Responses, row.NXDomain, rep.Sent, rep.Answered, rep.RCodes.NXDomain,
		finished.Sub(created).Round(time.Millisecond))
	t0 = time.Now()
	if _, err := topDNSFrame(ctx, lab.Kubeconfig(), "--once"); err != nil {
		t.Fatal(err)
	}
	t.Logf("timing: top dns --once answered in %s (discovery, access review, 2 port-forwards, one frame)", time.Since(t0).Round(time.Millisecond))

	out, errOut, err := runPlugin(ctx, lab.Kubeconfig(), "status", "-o", "json")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, errOut)
	}
	var report plugin.StatusReport
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("status json: %v\n%s", err, out)
	}
	sawReal := false
	for _, d := range report.Daemons {
		if d.Error != "" || d.ProbesAttached == 0 || d.ProbesAttached != len(d.Probes) || d.CountingSince == nil || !d.KubernetesConnected {
			t.Errorf("status of %s: %+v", d.Node, d)
		}
		if d.Node == real {
			sawReal = true
			if d.Version != imageVersion {
				t.Errorf("the real node's daemon reports version %q, want the image's %s", d.Version, imageVersion)
			}
			t.Logf("status of %s: %d probes attached, cgroup root %s, kernel %s, kubernetes connected", d.Node, d.ProbesAttached, d.CgroupRoot, d.Kernel)
		}
	}
	if !sawReal || len(report.Daemons) != 2 {
		t.Errorf("status lists %d daemons (real node's: %v): %+v", len(report.Daemons), sawReal, report)
	}
	out, errOut, err = runPlugin(ctx, lab.Kubeconfig(), "verify", "--component", "isoobs")
	if err != nil {
		t.Errorf("verify --component isoobs: %v\n%s\n%s", err, out, errOut)
	} else {
		t.Logf("verify --component isoobs:\n%s", out)
	}

	// Uninstall: the DaemonSet, its pods (the container on the real node) and the namespace go.
	ns := dpod.Namespace
	id := strings.TrimPrefix(dpod.Status.ContainerStatuses[0].ContainerID, "containerd://")
	t0 = time.Now()
	if out, errOut, err := runPlugin(ctx, lab.Kubeconfig(), "uninstall", "--wait"); err != nil {
		t.Fatalf("uninstall: %v\n%s\n%s", err, out, errOut)
	}
	testlab.WaitFor(t, 90*time.Second, func() error {
		if ds, err := client.AppsV1().DaemonSets(ns).List(ctx, metav1.ListOptions{}); err == nil && len(ds.Items) > 0 {
			return fmt.Errorf("%d DaemonSets left in %s", len(ds.Items), ns)
		}
		if pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err == nil && len(pods.Items) > 0 {
			return fmt.Errorf("%d pods left in %s (%s)", len(pods.Items), ns, podState(&pods.Items[0]))
		}
		if _, err := lab.Real.TaskPid(ctx, id); err == nil {
			return fmt.Errorf("the daemon container %s still runs in containerd", id)
		}
		if _, err := client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("namespace %s still there (%v)", ns, err)
		}
		return nil
	})
	t.Logf("timing: uninstall -> DaemonSet, pods, container and namespace gone in %s", time.Since(t0).Round(time.Millisecond))

	// A node whose pods cannot reach the API server (kube-proxy broken): the daemon says so in
	// its log and /readyz, and `install --wait` names it instead of only timing out.
	if err := lab.Real.SetServiceRoute(false); err != nil {
		t.Fatal(err)
	}
	routed := false
	restore := func() {
		if !routed {
			routed = true
			if err := lab.Real.SetServiceRoute(true); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(restore) // before the lab's Close, which deletes the rule
	t0 = time.Now()
	out, errOut, err = runPlugin(ctx, lab.Kubeconfig(), "install", "--components", "isoobs", "--wait", "--timeout", "45s")
	if err == nil || !strings.Contains(err.Error(), "cannot reach the Kubernetes API server https://") || !strings.Contains(out, "cannot reach the Kubernetes API server") {
		t.Errorf("install --wait with the kubernetes Service unreachable: err %v, want it to name the unreachable API server\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	} else {
		t.Logf("install --wait, API unreachable, failed after %s with:\n%v", time.Since(t0).Round(time.Millisecond), err)
	}
	restore()
	if out, errOut, err := runPlugin(ctx, lab.Kubeconfig(), "uninstall", "--wait"); err != nil {
		t.Fatalf("uninstall: %v\n%s\n%s", err, out, errOut)
	}
}

// waitRealDaemonReady waits for the daemon pod on the real node to be Running and Ready; on
// failure it says why (the kubelet's waiting reason and message, verbatim).
func waitRealDaemonReady(t *testing.T, ctx context.Context, lab *testlab.Lab) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := lab.Client().CoreV1().Pods(cluster.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: cluster.DefaultSelector,
			FieldSelector: "spec.nodeName=" + lab.Real.Name})
		if err != nil || len(pods.Items) == 0 {
			return false, nil
		}
		pod = &pods.Items[0]
		if pod.Status.Phase != corev1.PodRunning {
			return false, nil
		}
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		msg := "no pod"
		if pod != nil {
			msg = podState(pod)
			if evs, err := lab.Client().CoreV1().Events(pod.Namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod.Name}); err == nil {
				for _, e := range evs.Items {
					msg += fmt.Sprintf("\n  event %s %s: %s", e.Type, e.Reason, e.Message)
				}
			}
			if logs, err := lab.Client().CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(ctx); err == nil {
				msg += "\n  daemon log:\n" + tailLines(string(logs), 20)
			}
		}
		t.Fatalf("the daemon pod on the real node is not Running and Ready: %v: %s", err, msg)
	}
	return pod
}

// checkDaemonContainer checks the daemon's container process against the chart's pod spec.
func checkDaemonContainer(t *testing.T, ctx context.Context, lab *testlab.Lab, pod *corev1.Pod) {
	t.Helper()
	id := strings.TrimPrefix(pod.Status.ContainerStatuses[0].ContainerID, "containerd://")
	pid, err := lab.Real.TaskPid(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	if fields["CapEff"] != wantCapEff || fields["CapPrm"] != wantCapEff {
		t.Errorf("daemon process %d: CapEff %s CapPrm %s, want %s (drop ALL + BPF, PERFMON, NET_ADMIN)", pid, fields["CapEff"], fields["CapPrm"], wantCapEff)
	}
	if fields["Seccomp"] != "2" { // 2: filter mode, the runtime's default profile
		t.Errorf("daemon process %d: Seccomp %q, want 2 (RuntimeDefault filter)", pid, fields["Seccomp"])
	}
	if fields["NoNewPrivs"] != "1" {
		t.Errorf("daemon process %d: NoNewPrivs %q, want 1 (allowPrivilegeEscalation: false)", pid, fields["NoNewPrivs"])
	}
	if u := strings.Fields(fields["Uid"]); len(u) == 0 || u[0] != "0" {
		t.Errorf("daemon process %d: Uid %q, want 0 (runAsUser: 0)", pid, fields["Uid"])
	}
	// Mounts as the process sees them: read-only root, and each of the chart's volumeMounts.
	mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	mounts := map[string]string{} // mount point -> per-mount options
	for _, l := range strings.Split(string(mi), "\n") {
		f := strings.Fields(l)
		if len(f) > 5 {
			mounts[f[4]] = f[5]
		}
	}
	ro := func(opts string) bool { return strings.HasPrefix(opts, "ro,") || opts == "ro" }
	if !ro(mounts["/"]) {
		t.Errorf("daemon root filesystem mounted %q, want read-only", mounts["/"])
	}
	c := pod.Spec.Containers[0]
	for _, m := range c.VolumeMounts {
		opts, ok := mounts[m.MountPath]
		if !ok {
			t.Errorf("volumeMount %s (%s) is not mounted in the daemon container", m.Name, m.MountPath)
			continue
		}
		if ro(opts) != m.ReadOnly {
			t.Errorf("volumeMount %s at %s mounted %q, readOnly %v in the chart", m.Name, m.MountPath, opts, m.ReadOnly)
		}
	}
	// Its ServiceAccount token, not an admin credential: the JWT names the chart's ServiceAccount.
	tokenDir := "/var/run/secrets/kubernetes.io/serviceaccount"
	if _, ok := mounts[tokenDir]; !ok {
		t.Fatalf("no ServiceAccount token mounted at %s in the daemon container", tokenDir)
	}
	tok, err := os.ReadFile(fmt.Sprintf("/proc/%d/root%s/token", pid, tokenDir))
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(string(tok), ".")
	var claims struct {
		Sub string `json:"sub"`
	}
	if len(parts) == 3 {
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		_ = json.Unmarshal(payload, &claims)
	}
	want := "system:serviceaccount:" + pod.Namespace + ":" + pod.Spec.ServiceAccountName
	if claims.Sub != want {
		t.Errorf("daemon token subject %q, want %s", claims.Sub, want)
	}
	// That identity has the chart's RBAC only: reading pods yes, Secrets no.
	for _, c := range []struct {
		verb, resource string
		want           bool
	}{{"watch", "pods", true}, {"list", "secrets", false}} {
		sar, err := lab.Client().AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{User: want, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + pod.Namespace},
				ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: c.verb, Resource: c.resource}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed != c.want {
			t.Errorf("%s may %s %s cluster-wide: %v, want %v (%s)", want, c.verb, c.resource, sar.Status.Allowed, c.want, sar.Status.Reason)
		}
	}
	env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	for _, kv := range strings.Split(string(env), "\x00") {
		if strings.HasPrefix(kv, "KUBECONFIG=") {
			t.Errorf("daemon container has %s: it must use its ServiceAccount", kv)
		}
	}
	t.Logf("daemon container %s (pid %d): CapEff %s, Seccomp %s, NoNewPrivs %s, root %s, token of %s, mounts %d",
		id[:12], pid, fields["CapEff"], fields["Seccomp"], fields["NoNewPrivs"], strings.SplitN(mounts["/"], ",", 2)[0], claims.Sub, len(c.VolumeMounts))
}

func topDNSFrame(ctx context.Context, kubeconfig string, args ...string) (top.Frame, error) {
	out, errOut, err := runPlugin(ctx, kubeconfig, append([]string{"top", "dns", "-A", "-o", "json", "--limit", "0"}, args...)...)
	if err != nil {
		return top.Frame{}, fmt.Errorf("%w\n%s", err, errOut)
	}
	var f top.Frame
	if err := json.Unmarshal([]byte(out), &f); err != nil {
		return f, fmt.Errorf("decoding %q: %w", out, err)
	}
	return f, nil
}

func podState(p *corev1.Pod) string {
	if p == nil {
		return "no pod"
	}
	s := fmt.Sprintf("%s/%s on %q phase %s", p.Namespace, p.Name, p.Spec.NodeName, p.Status.Phase)
	for _, c := range p.Status.ContainerStatuses {
		switch {
		case c.State.Waiting != nil:
			s += fmt.Sprintf("; %s waiting %s: %s", c.Name, c.State.Waiting.Reason, c.State.Waiting.Message)
		case c.State.Terminated != nil:
			s += fmt.Sprintf("; %s terminated %s (exit %d): %s", c.Name, c.State.Terminated.Reason, c.State.Terminated.ExitCode, c.State.Terminated.Message)
		case c.State.Running != nil:
			s += fmt.Sprintf("; %s running, ready %v", c.Name, c.Ready)
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			s += fmt.Sprintf("; %s: %s", c.Type, c.Message)
		}
	}
	return s
}

// jsonPart is the generator's JSON report inside the container log (stderr lines may precede it).
func jsonPart(b []byte) []byte {
	if i := bytes.IndexByte(b, '{'); i >= 0 {
		if j := bytes.LastIndexByte(b, '}'); j > i {
			return b[i : j+1]
		}
	}
	return b
}

func tailLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
