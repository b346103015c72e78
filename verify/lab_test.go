package verify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/verify"
	"github.com/isoobs/isoobs/verify/verifytest"
)

func labOptions(lab *testlab.Lab) verify.Options {
	return verify.Options{
		Client:  lab.Client(),
		Dynamic: dynamic.NewForConfigOrDie(lab.RESTConfig()),
		Config:  lab.RESTConfig(),
	}
}

func runVerify(t *testing.T, opts verify.Options) *verify.Report {
	t.Helper()
	start := time.Now()
	rep, err := verify.Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	_ = rep.Format(&buf, verify.FormatOptions{MaxItems: 20})
	t.Logf("verify took %s:\n%s", time.Since(start).Round(time.Millisecond), buf.String())
	return rep
}

// notOK lists "id=status" for every result that is neither ok nor skip.
func notOK(rep *verify.Report) []string {
	var out []string
	for _, r := range rep.Results {
		if r.Status != verify.StatusOK && r.Status != verify.StatusSkip {
			out = append(out, r.ID+"="+string(r.Status))
		}
	}
	return out
}

// expectOnly asserts the report has exactly one non-ok result, id, with
// status, whose detail, items and next contain the wanted texts.
func expectOnly(t *testing.T, rep *verify.Report, id string, status verify.Status, detail, item, next string) {
	t.Helper()
	if got, want := notOK(rep), []string{id + "=" + string(status)}; !slices.Equal(got, want) {
		t.Fatalf("non-ok checks %v, want exactly %v", got, want)
	}
	r := rep.Result(id)
	if !strings.Contains(r.Detail, detail) {
		t.Errorf("%s detail %q lacks %q", id, r.Detail, detail)
	}
	if item != "" && !slices.ContainsFunc(r.Items, func(s string) bool { return strings.Contains(s, item) }) {
		t.Errorf("%s items %q lack %q", id, r.Items, item)
	}
	if !strings.Contains(r.Next, next) {
		t.Errorf("%s next %q lacks %q", id, r.Next, next)
	}
}

func podOnNode(t *testing.T, lab *testlab.Lab, ns, selector, node string) *corev1.Pod {
	t.Helper()
	pods, err := lab.Client().CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector, FieldSelector: "spec.nodeName=" + node})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods %s on %s: %v (%d)", selector, node, err, len(pods.Items))
	}
	return &pods.Items[0]
}

func setPodReady(t *testing.T, lab *testlab.Lab, pod *corev1.Pod, ready bool) {
	t.Helper()
	st := corev1.ConditionTrue
	if !ready {
		st = corev1.ConditionFalse
	}
	patch := fmt.Sprintf(`{"status":{"conditions":[{"type":"Ready","status":%q,"reason":"ContainersNotReady"},{"type":"ContainersReady","status":%q}]}}`, st, st)
	if _, err := lab.Client().CoreV1().Pods(pod.Namespace).Patch(context.Background(), pod.Name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
}

// TestLabStackFaults installs the stack on a 3-node lab, checks that the
// healthy stack passes (every check ok), then injects one fault at a time
// and checks that exactly the expected check fails (or warns) with the
// expected hint.
func TestLabStackFaults(t *testing.T) {
	lab := testlab.StartForTest(t, testlab.Options{NoCoreDNS: true})
	stack := verifytest.Install(t, lab)
	ctx := context.Background()
	cs := lab.Client()
	opts := labOptions(lab)
	nodes := lab.NodeNames()

	t.Run("healthy", func(t *testing.T) {
		rep := runVerify(t, opts)
		if got := notOK(rep); len(got) != 0 {
			t.Fatalf("healthy stack: non-ok checks %v", got)
		}
		if !rep.Healthy(true) {
			t.Fatal("healthy stack not Healthy(strict)")
		}
		if rep.DurationMS > 10_000 {
			t.Errorf("a full run took %d ms, want <= 10 s", rep.DurationMS)
		}
		// Read from real daemons' /metrics (verifytest serves them at the isoobs pods).
		if d := rep.Result("isoobs/daemons").Detail; !strings.Contains(d, "probes attached on 3/3 checked; Hubble connected on 3/3") {
			t.Errorf("isoobs/daemons detail %q: want probes attached and Hubble connected on 3/3", d)
		}
		relay := rep.Result("hubble/relay")
		for _, want := range []string{"Current/Max Flows: 12,285/12,285 (100.00%)", "Flows/s: 31.55", "Connected Nodes: 3/3"} {
			if !strings.Contains(relay.Detail, want) {
				t.Errorf("relay detail %q lacks %q (what hubble status prints)", relay.Detail, want)
			}
		}
		// The JSON schema: stable top-level fields and per-result fields.
		var buf bytes.Buffer
		if err := rep.WriteJSON(&buf); err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"schemaVersion", "time", "status", "counts", "durationMs", "results"} {
			if _, ok := doc[k]; !ok {
				t.Errorf("JSON lacks %q", k)
			}
		}
		if doc["schemaVersion"] != verify.SchemaVersion || doc["status"] != "ok" {
			t.Errorf("JSON schemaVersion/status = %v/%v", doc["schemaVersion"], doc["status"])
		}
	})

	t.Run("relay scaled to 0", func(t *testing.T) {
		scale(t, lab, "hubble-relay", 0)
		rep := runVerify(t, opts)
		expectOnly(t, rep, "hubble/relay", verify.StatusFail, "hubble-relay is scaled to 0 replicas", "", "kubectl -n kube-system scale deploy/hubble-relay --replicas=1")
		scale(t, lab, "hubble-relay", 1)
		if err := stack.Settle(ctx, "kube-system", verify.LabelHubbleRelay, 1); err != nil {
			t.Fatal(err)
		}
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			d, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "hubble-relay", metav1.GetOptions{})
			return err == nil && d.Status.ReadyReplicas == 1 && d.Status.AvailableReplicas == 1, nil
		})
		if err != nil {
			t.Fatal("hubble-relay Deployment status not back to 1 ready: ", err)
		}
	})

	t.Run("cilium pod NotReady on one node", func(t *testing.T) {
		pod := podOnNode(t, lab, "kube-system", verify.LabelCiliumAgent, nodes[1])
		setPodReady(t, lab, pod, false)
		defer func() {
			setPodReady(t, lab, pod, true)
			// The DaemonSet controller's status lags the pod; verify rightly
			// warns until it catches up, so the next fault waits for it.
			waitDaemonSetReady(t, lab, "kube-system", "cilium", int32(len(nodes)))
		}()
		rep := runVerify(t, opts)
		expectOnly(t, rep, "cilium/agent", verify.StatusFail, "on 2/3 nodes", nodes[1]+": "+pod.Name+" Running, not Ready", "kubectl -n kube-system describe pod "+pod.Name)
	})

	t.Run("metrics endpoint missing names", func(t *testing.T) {
		pod := podOnNode(t, lab, "kube-system", verify.LabelCiliumAgent, nodes[2])
		stack.SetPodText(pod.Name, verify.PortCiliumAgent, verifytest.WithoutMetrics(stack.Text(verify.PortCiliumAgent), "cilium_bpf_map_ops_total", "cilium_endpoint_state"))
		defer stack.SetPodText(pod.Name, verify.PortCiliumAgent, nil)
		rep := runVerify(t, opts)
		expectOnly(t, rep, "metrics/cilium-agent", verify.StatusFail, "some names the pipeline filters on are missing",
			nodes[2]+" "+pod.Name+": missing cilium_bpf_map_ops_total, cilium_endpoint_state",
			"kubectl get --raw /api/v1/namespaces/kube-system/pods/"+pod.Name+":9962/proxy/metrics")
	})

	t.Run("isoobs daemon not connected to Hubble", func(t *testing.T) {
		pod := podOnNode(t, lab, "isoobs", verify.LabelIsoobsDaemon, nodes[1])
		stack.SetPodHubbleDown(pod.Name, true)
		defer stack.SetPodHubbleDown(pod.Name, false)
		rep := runVerify(t, opts)
		expectOnly(t, rep, "isoobs/daemons", verify.StatusFail, "probes attached on 3/3 checked; Hubble connected on 2/3",
			nodes[1]+" "+pod.Name+": not connected to Hubble", "kubectl -n isoobs logs "+pod.Name)
	})

	t.Run("no DNS policy", func(t *testing.T) {
		if err := stack.SetDNSPolicy(ctx, false); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := stack.SetDNSPolicy(ctx, true); err != nil {
				t.Fatal(err)
			}
		}()
		rep := runVerify(t, opts)
		expectOnly(t, rep, "l7/dns-visibility", verify.StatusWarn, "no CiliumNetworkPolicy has dns rules (2 application pods)",
			"tenant-jobs/crawler: 2 pod(s) without a DNS policy", "kubectl isoobs top dns -n tenant-jobs")
		if !strings.Contains(rep.Result("l7/dns-visibility").Detail, "kubectl isoobs top dns still counts them from eBPF") {
			t.Error("the DNS visibility warning does not say that top dns still works")
		}
		if rep.Healthy(true) || !rep.Healthy(false) {
			t.Error("a warning must fail only --strict")
		}
	})

	t.Run("hubble-metrics without dns", func(t *testing.T) {
		cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "cilium-config", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		orig := cm.Data["hubble-metrics"]
		cm.Data["hubble-metrics"] = strings.Join(slices.DeleteFunc(strings.Fields(orig), func(m string) bool { return strings.HasPrefix(m, "dns:") }), " ")
		if _, err := cs.CoreV1().ConfigMaps("kube-system").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer func() {
			cm, _ := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "cilium-config", metav1.GetOptions{})
			cm.Data["hubble-metrics"] = orig
			if _, err := cs.CoreV1().ConfigMaps("kube-system").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}()
		rep := runVerify(t, opts)
		expectOnly(t, rep, "config/cilium-config", verify.StatusFail, "hubble-metrics lacks dns: hubble_dns_* stay empty",
			"- hubble-metrics: dns:labelsContext=source_namespace,destination_namespace missing", "kubectl isoobs install")
	})

	t.Run("isoobs daemon missing on a node", func(t *testing.T) {
		setDaemonExcludes(t, lab, nodes[2])
		// The rollout replaces the pods on the two other nodes too: two ready pods can be old ones.
		waitDaemonSetReady(t, lab, "isoobs", "isoobs", int32(len(nodes)-1))
		if err := stack.Settle(ctx, "isoobs", verify.LabelIsoobsDaemon, 2); err != nil {
			t.Fatal(err)
		}
		rep := runVerify(t, opts)
		expectOnly(t, rep, "isoobs/daemons", verify.StatusFail, "on 2/3 nodes", nodes[2]+": no pod", "kubectl -n isoobs describe ds isoobs")
		setDaemonExcludes(t, lab, "")
		waitDaemonSetReady(t, lab, "isoobs", "isoobs", int32(len(nodes)))
		// Settle after the rollout: it serves the metrics of the pods that replaced the old ones.
		if err := stack.Settle(ctx, "isoobs", verify.LabelIsoobsDaemon, 3); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("relay reports an unavailable node", func(t *testing.T) {
		stack.Relay.SetNodes([]string{nodes[0], nodes[2]}, []string{nodes[1]})
		defer stack.Relay.SetNodes(nodes, nil)
		rep := runVerify(t, opts)
		expectOnly(t, rep, "hubble/relay", verify.StatusFail, "1 node(s) unavailable; Current/Max Flows: 12,285/12,285 (100.00%), Flows/s: 31.55, Connected Nodes: 2/3",
			"unavailable: "+nodes[1], "--field-selector spec.nodeName="+nodes[1])
	})

	t.Run("healthy again", func(t *testing.T) {
		if got := notOK(runVerify(t, opts)); len(got) != 0 {
			t.Fatalf("after undoing every fault: non-ok checks %v", got)
		}
	})
}

func scale(t *testing.T, lab *testlab.Lab, name string, n int32) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)
	if _, err := lab.Client().AppsV1().Deployments("kube-system").Patch(context.Background(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// setDaemonExcludes gives the isoobs DaemonSet a node affinity that leaves
// out node ("" removes it): a misconfiguration that leaves a node unwatched.
func setDaemonExcludes(t *testing.T, lab *testlab.Lab, node string) {
	t.Helper()
	patch := `{"spec":{"template":{"spec":{"affinity":null}}}}`
	if node != "" {
		patch = fmt.Sprintf(`{"spec":{"template":{"spec":{"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"kubernetes.io/hostname","operator":"NotIn","values":[%q]}]}]}}}}}}}`, node)
	}
	if _, err := lab.Client().AppsV1().DaemonSets("isoobs").Patch(context.Background(), "isoobs", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

func waitDaemonSetReady(t *testing.T, lab *testlab.Lab, ns, name string, n int32) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		ds, err := lab.Client().AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		// The rollout must be over too, not just n pods ready (old ones may still be replaced).
		return ds.Status.ObservedGeneration >= ds.Generation && ds.Status.UpdatedNumberScheduled == n &&
			ds.Status.NumberReady == n && ds.Status.NumberAvailable == n, nil
	})
	if err != nil {
		t.Fatalf("DaemonSet %s/%s not back to %d ready: %v", ns, name, n, err)
	}
}
