//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/isoobs/isoobs/deploy"
	"github.com/isoobs/isoobs/plugin"
	"github.com/isoobs/isoobs/plugin/cluster"
	"github.com/isoobs/isoobs/release/image"
	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/controlplane"
	"github.com/isoobs/isoobs/testlab/coredns"
	"github.com/isoobs/isoobs/testlab/needroot"
	"github.com/isoobs/isoobs/testlab/realnode"
	"github.com/isoobs/isoobs/verify"
)

// The lab has no internet: its CoreDNS answers every name of the noerror.test zone with an
// address, which plays the external name.
var verifyDNSExternal = "verify." + strings.TrimSuffix(coredns.NoErrorZone, ".")

const verifyDNSVersion = "v0.0.0-verifydns"

// TestRealNodeVerifyDNS is issue 16 item 6 on the real node: `kubectl isoobs install` runs the
// release image's daemon as a real container on a real kubelet; `kubectl isoobs verify --dns`
// starts its probe pod there (the same image, nothing pulled), which resolves the cluster name,
// an NXDOMAIN name and the "external" name once each, and the report says exactly: 3 queries,
// 3 responses, 1 NXDOMAIN counted by the daemon and exported by its metrics; Hubble not checked
// (no DNS policy: the lab has no Cilium). Then the failing cases: the daemon kept off the real
// node (the report fails the daemon and metrics lines with the command to run) and no daemon
// at all (a clear error).
func TestRealNodeVerifyDNS(t *testing.T) {
	needroot.Require(t, "the real node runs a kubelet and containerd and the daemon loads eBPF")
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
	t0 := time.Now()
	res, err := image.Build(ctx, image.Options{RepoRoot: root, Version: verifyDNSVersion, Commit: "verify-dns-e2e",
		Date: time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC), Platforms: []string{"linux/" + runtime.GOARCH}, OutDir: filepath.Join(work, "image")})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("timing: daemon image %s built in %s", res.Reference, time.Since(t0).Round(time.Millisecond))
	oldRepo, oldTag, oldDigest := deploy.DaemonImageRepository, deploy.DaemonImageTag, deploy.DaemonImageDigest
	deploy.DaemonImageRepository, deploy.DaemonImageTag, deploy.DaemonImageDigest = image.DefaultRepository, verifyDNSVersion, res.IndexDigest
	t.Cleanup(func() {
		deploy.DaemonImageRepository, deploy.DaemonImageTag, deploy.DaemonImageDigest = oldRepo, oldTag, oldDigest
	})

	t0 = time.Now()
	lab := testlab.StartForTest(t, testlab.Options{RealNode: true, Nodes: []string{"vd-kwok-a"}})
	t.Logf("timing: lab + real node up in %s", time.Since(t0).Round(time.Millisecond))
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
	if err := lab.Real.ImportImage(ctx, res.OCIArchive); err != nil {
		t.Fatal(err)
	}
	if out, errOut, err := runPlugin(ctx, lab.Kubeconfig(), "install", "--components", "isoobs"); err != nil {
		t.Fatalf("kubectl isoobs install: %v\n%s\n%s", err, out, errOut)
	}
	dpod := waitRealDaemonReady(t, ctx, lab)
	t.Logf("daemon pod %s Ready on %s", dpod.Name, real)

	// Healthy: every count exact.
	t0 = time.Now()
	out, errOut, err := runPlugin(ctx, lab.Kubeconfig(), "verify", "--dns", "--dns-node", real, "--dns-external-name", verifyDNSExternal, "-o", "json")
	if err != nil {
		t.Fatalf("verify --dns: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	t.Logf("verify --dns -o json in %s:\n%s\nstderr:\n%s", time.Since(t0).Round(time.Millisecond), out, errOut)
	rep := decodeDNSReport(t, out)
	want := verify.DNSCounts{Queries: 3, Responses: 3, NXDomain: 1}
	d := rep.DNS
	if d.Node != real || d.Namespace != cluster.DefaultNamespace || !strings.HasPrefix(d.Pod, "isoobs-verify-dns-") || d.DaemonPod != dpod.Name {
		t.Errorf("probe %s/%s on %s (daemon %s), want namespace %s on %s with daemon %s", d.Namespace, d.Pod, d.Node, d.DaemonPod, cluster.DefaultNamespace, real, dpod.Name)
	}
	if d.Image != dpod.Spec.Containers[0].Image {
		t.Errorf("probe image %s, want the daemon's %s", d.Image, dpod.Spec.Containers[0].Image)
	}
	if d.Server != lab.DNSServiceIP.String()+":53" {
		t.Errorf("probe asked %s, want the kube-dns Service %s:53", d.Server, lab.DNSServiceIP)
	}
	if d.Expected != want {
		t.Errorf("the probe sent %+v, want %+v: %+v", d.Expected, want, d.Queries)
	}
	if d.Daemon == nil || *d.Daemon != want {
		t.Errorf("the daemon counted %+v, want %+v", d.Daemon, want)
	}
	if d.Metrics == nil || *d.Metrics != want {
		t.Errorf("the metrics rose by %+v, want %+v", d.Metrics, want)
	}
	if d.Hubble != nil || len(d.Policies) != 0 {
		t.Errorf("Hubble %+v, policies %v: the lab has no DNS policy", d.Hubble, d.Policies)
	}
	for id, st := range map[string]verify.Status{verify.DNSIDProbe: verify.StatusOK, verify.DNSIDDaemon: verify.StatusOK,
		verify.DNSIDHubble: verify.StatusSkip, verify.DNSIDMetrics: verify.StatusOK} {
		if r := rep.Result(id); r == nil || r.Status != st {
			t.Errorf("%s: %+v, want %s", id, r, st)
		}
	}
	if r := rep.Result(verify.DNSIDDaemon); r != nil && r.Detail != "counted exactly the probe's 3 queries, 3 responses, 1 NXDOMAIN" {
		t.Errorf("daemon line %q", r.Detail)
	}
	if r := rep.Result(verify.DNSIDHubble); r != nil && !strings.HasPrefix(r.Detail, "not checked: no DNS policy selects the probe pod") {
		t.Errorf("hubble line %q", r.Detail)
	}
	checkProbeGone(t, ctx, lab, d)

	// The table, as a user reads it.
	out, _, err = runPlugin(ctx, lab.Kubeconfig(), "verify", "--dns", "--dns-node", real, "--dns-external-name", verifyDNSExternal)
	if err != nil {
		t.Fatalf("verify --dns: %v\n%s", err, out)
	}
	t.Logf("verify --dns:\n%s", out)
	for _, s := range []string{"✔ Daemon counted", "counted exactly the probe's 3 queries, 3 responses, 1 NXDOMAIN", "- Hubble saw", "not checked: no DNS policy selects the probe pod",
		"✔ Metrics exported", "rose by exactly 3 queries, 3 responses, 1 NXDOMAIN", "isoobs-verify-dns.invalid A: NXDOMAIN", "3 ok, 0 warnings, 0 failures, 1 skipped"} {
		if !strings.Contains(out, s) {
			t.Errorf("table lacks %q", s)
		}
	}

	// Failing: the DaemonSet no longer runs on the real node. The probe still runs there (the
	// image is the DaemonSet's), and nobody counts it.
	ds, err := client.AppsV1().DaemonSets(cluster.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: cluster.DefaultSelector})
	if err != nil || len(ds.Items) != 1 {
		t.Fatalf("isoobs DaemonSets: %v %v", ds, err)
	}
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchFields":[{"key":"metadata.name","operator":"NotIn","values":[%q]}]}]}}}}}}}`, real)
	if _, err := client.AppsV1().DaemonSets(cluster.DefaultNamespace).Patch(ctx, ds.Items[0].Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	testlab.WaitFor(t, 90*time.Second, func() error {
		pods, err := client.CoreV1().Pods(cluster.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: cluster.DefaultSelector, FieldSelector: "spec.nodeName=" + real})
		if err != nil {
			return err
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("daemon pod %s still on %s (%s)", pods.Items[0].Name, real, podState(&pods.Items[0]))
		}
		return nil
	})
	out, errOut, err = runPlugin(ctx, lab.Kubeconfig(), "verify", "--dns", "--dns-node", real, "--dns-external-name", verifyDNSExternal, "-o", "json")
	if !errors.Is(err, plugin.ErrVerifyFailed) {
		t.Fatalf("verify --dns without a daemon on %s: %v, want ErrVerifyFailed (exit 1)\n%s\n%s", real, err, out, errOut)
	}
	t.Logf("verify --dns, no daemon on %s:\n%s", real, out)
	rep = decodeDNSReport(t, out)
	if rep.DNS.Expected != want || rep.DNS.Daemon != nil || rep.DNS.Metrics != nil {
		t.Errorf("probe sent %+v, daemon %+v, metrics %+v; want %+v and nothing read", rep.DNS.Expected, rep.DNS.Daemon, rep.DNS.Metrics, want)
	}
	if got := rep.Failing(verify.StatusFail); strings.Join(got, ",") != verify.DNSIDDaemon+","+verify.DNSIDMetrics {
		t.Errorf("failing %v, want [dns/daemon dns/metrics]", got)
	}
	r := rep.Result(verify.DNSIDDaemon)
	if r == nil || r.Detail != "no isoobs daemon runs on the probe's node: nobody counted its 3 queries, 3 responses, 1 NXDOMAIN" ||
		!strings.HasPrefix(r.Next, "kubectl -n isoobs get daemonset,pods -o wide  # no isoobs daemon runs on "+real) {
		t.Errorf("daemon line %+v", r)
	}
	checkProbeGone(t, ctx, lab, rep.DNS)

	// No daemon at all: a clear error, and no probe pod is started.
	if out, errOut, err := runPlugin(ctx, lab.Kubeconfig(), "uninstall", "--wait"); err != nil {
		t.Fatalf("uninstall: %v\n%s\n%s", err, out, errOut)
	}
	_, _, err = runPlugin(ctx, lab.Kubeconfig(), "verify", "--dns")
	if err == nil || !strings.Contains(err.Error(), "verify --dns: no isoobs daemon: no pods with labels "+cluster.DefaultSelector+" in namespace isoobs: install the daemons with `kubectl isoobs install --components isoobs --wait`") {
		t.Errorf("verify --dns without daemons: %v", err)
	}
	if pods, err := client.CoreV1().Pods(cluster.DefaultNamespace).List(ctx, metav1.ListOptions{}); err != nil || len(pods.Items) != 0 {
		t.Errorf("pods in %s after verify --dns without daemons: %d (%v)", cluster.DefaultNamespace, len(pods.Items), err)
	}
}

func decodeDNSReport(t *testing.T, out string) *verify.DNSReport {
	t.Helper()
	var rep verify.DNSReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Report == nil || rep.DNS == nil {
		t.Fatalf("verify --dns -o json: %v\n%s", err, out)
	}
	if rep.SchemaVersion != verify.SchemaVersion || len(rep.Results) != 4 {
		t.Fatalf("schema %q, %d results, want %s and 4", rep.SchemaVersion, len(rep.Results), verify.SchemaVersion)
	}
	return &rep
}

// checkProbeGone: the report says the probe pod was deleted, and it is.
func checkProbeGone(t *testing.T, ctx context.Context, lab *testlab.Lab, d *verify.DNSCheckStatus) {
	t.Helper()
	if !d.PodDeleted {
		t.Errorf("probe pod %s/%s not deleted", d.Namespace, d.Pod)
	}
	testlab.WaitFor(t, 30*time.Second, func() error {
		p, err := lab.Client().CoreV1().Pods(d.Namespace).Get(ctx, d.Pod, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("probe pod %s/%s still there: %s (%v)", d.Namespace, d.Pod, podState(p), err)
	})
}
