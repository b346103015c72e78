package verify

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	"github.com/isoobs/isoobs/install/values"
)

func readyPod(ns, name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

// collectorConfig is the agent configuration install writes for --pipeline splunk, edited.
func collectorConfig(t *testing.T, edit func(cfg map[string]any)) string {
	t.Helper()
	o := values.Defaults()
	o.Pipeline, o.Splunk.Realm = values.PipelineSplunk, "us1"
	b, err := yaml.Marshal(values.SplunkCollector(o)["agent"].(map[string]any)["config"])
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(cfg)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// The splunk pipeline's collector also takes the isoobs daemons' metrics: verify reports the
// receiver and the allowlist, and warns (naming what is missing) when either is not there.
func TestCollectorTakesIsoobsMetrics(t *testing.T) {
	run := func(cfg string, daemons bool) Result {
		objs := []runtime.Object{
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "otel-splunk", Name: "splunk-otel-collector-otel-agent", Labels: map[string]string{"app": "splunk-otel-collector"}},
				Data: map[string]string{otelConfigKey: cfg}},
			readyPod("otel-splunk", "splunk-otel-collector-agent-x", map[string]string{"app": "splunk-otel-collector"}),
		}
		if daemons {
			objs = append(objs, readyPod("isoobs", "isoobs-abc", map[string]string{"app.kubernetes.io/name": "isoobs", "app.kubernetes.io/component": "daemon"}))
		}
		return checkPipeline(context.Background(), newEnv(Options{Client: fake.NewClientset(objs...)}))
	}
	hasItem := func(r Result, s string) bool {
		return slices.ContainsFunc(r.Items, func(i string) bool { return strings.Contains(i, s) })
	}

	r := run(collectorConfig(t, nil), true)
	if r.Status != StatusOK || !strings.Contains(r.Detail, "5/5 receivers wired") || !hasItem(r, fmt.Sprintf("isoobs :9966: prometheus/isoobs (%d isoobs metrics allowed)", len(values.IsoobsMetricAllowlist))) {
		t.Errorf("install's config: %s %s %v", r.Status, r.Detail, r.Items)
	}
	if r := run(collectorConfig(t, nil), false); r.Status != StatusOK || hasItem(r, "isoobs") {
		t.Errorf("no isoobs daemons: %s %v", r.Status, r.Items)
	}
	noReceiver := collectorConfig(t, func(cfg map[string]any) {
		delete(cfg["receivers"].(map[string]any), values.IsoobsReceiver)
	})
	if r := run(noReceiver, true); r.Status != StatusWarn || !hasItem(r, "isoobs :9966: no prometheus receiver") || !strings.Contains(r.Next, "--pipeline splunk") {
		t.Errorf("no isoobs receiver: %s %s %v %s", r.Status, r.Detail, r.Items, r.Next)
	}
	filtered := collectorConfig(t, func(cfg map[string]any) {
		inc := cfg["processors"].(map[string]any)["filter/includemetrics"].(map[string]any)["metrics"].(map[string]any)["include"].(map[string]any)
		inc["metric_names"] = slices.DeleteFunc(inc["metric_names"].([]any), func(n any) bool { return n == "isoobs_dns_queries_total" })
	})
	if r := run(filtered, true); r.Status != StatusWarn || !hasItem(r, "the metrics pipeline's filter drops isoobs_dns_queries_total") {
		t.Errorf("isoobs_dns_queries_total filtered out: %s %v", r.Status, r.Items)
	}
}
