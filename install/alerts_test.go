package install

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/isoobs/isoobs/deploy/alerts"
	"github.com/isoobs/isoobs/install/values"
)

// The isoobs chart ships deploy/alerts' rules as a PrometheusRule exactly when the operator's
// CRD exists and install found the operator (values.Daemon), with the rules' text unchanged
// (Prometheus's {{ $labels }} survive Helm), and the user's extra labels for a ruleSelector.
func TestDaemonChartPrometheusRule(t *testing.T) {
	ch, err := LoadChart(context.Background(), Specs(values.EditionOSS)[ComponentIsoobs], Source{})
	if err != nil {
		t.Fatal(err)
	}
	const crd = "monitoring.coreos.com/v1/PrometheusRule"
	o := testOptions(values.ProfileDefault)
	if n := countKind(renderComponent(t, ComponentIsoobs, o, nil, ch, crd), "PrometheusRule"); n != 0 {
		t.Errorf("%d PrometheusRules without the Prometheus operator found by install", n)
	}
	o.PrometheusOperator = true
	if n := countKind(renderComponent(t, ComponentIsoobs, o, nil, ch), "PrometheusRule"); n != 0 {
		t.Errorf("%d PrometheusRules on a cluster without the PrometheusRule CRD", n)
	}
	ov := Overrides{ComponentIsoobs: {"metrics": map[string]any{"prometheusRule": map[string]any{"labels": map[string]any{"release": "kube-prometheus-stack"}}}}}
	objs := renderComponent(t, ComponentIsoobs, o, ov, ch, crd)
	pr := Find(objs, "PrometheusRule", "isoobs")
	if pr == nil {
		t.Fatalf("no PrometheusRule isoobs with the operator and its CRD")
	}
	if pr.GetNamespace() != values.NamespaceIsoobs || pr.GetLabels()["release"] != "kube-prometheus-stack" || pr.GetLabels()["app.kubernetes.io/name"] != "isoobs" {
		t.Errorf("PrometheusRule %s/%s labels %v", pr.GetNamespace(), pr.GetName(), pr.GetLabels())
	}
	want, err := alerts.Groups(alerts.Rules())
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(pr.Object["spec"])
	gotGroups, err := alerts.Groups(got)
	if err != nil {
		t.Fatalf("PrometheusRule spec: %v", err)
	}
	w, _ := json.Marshal(want)
	g, _ := json.Marshal(gotGroups)
	if string(w) != string(g) {
		t.Errorf("PrometheusRule spec.groups differ from deploy/alerts:\n%s\nwant\n%s", g, w)
	}
	if Find(objs, "DaemonSet", "isoobs") == nil {
		t.Error("no DaemonSet beside the PrometheusRule")
	}

	// The operator's Prometheus labels the daemons' series as the rules expect: job="isoobs"
	// (from the Service's app.kubernetes.io/name), node, and the daemon's namespace label kept.
	sm := Find(objs, "ServiceMonitor", "isoobs")
	if sm == nil {
		t.Fatal("no ServiceMonitor with the operator")
	}
	spec := sm.Object["spec"].(map[string]any)
	ep := spec["endpoints"].([]any)[0].(map[string]any)
	svc := Find(objs, "Service", "isoobs-metrics")
	if svc == nil || spec["jobLabel"] != "app.kubernetes.io/name" || svc.GetLabels()["app.kubernetes.io/name"] != "isoobs" {
		t.Errorf("ServiceMonitor jobLabel %v, Service labels %v: want job=\"isoobs\"", spec["jobLabel"], svc)
	}
	rl, _ := json.Marshal(ep["relabelings"])
	if ep["honorLabels"] != true || string(rl) != `[{"sourceLabels":["__meta_kubernetes_pod_node_name"],"targetLabel":"node"}]` {
		t.Errorf("ServiceMonitor endpoint honorLabels %v relabelings %s", ep["honorLabels"], rl)
	}
}

func TestPrometheusRulesFileName(t *testing.T) {
	if values.PrometheusRulesFile != alerts.FileName {
		t.Errorf("prometheus.yaml names %q, PrepareMonitoringChart writes %q", values.PrometheusRulesFile, alerts.FileName)
	}
}

// The pipeline's scrape job keeps the daemons' namespace label (the DNS client's namespace)
// instead of renaming it exported_namespace under the daemon pod's, and loads the rules.
func TestPrometheusConfigHonorsIsoobsLabels(t *testing.T) {
	cfg, err := values.PrometheusConfig(testOptions(values.ProfileDefault))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		RuleFiles     []string `json:"rule_files"`
		ScrapeConfigs []struct {
			JobName     string `json:"job_name"`
			HonorLabels bool   `json:"honor_labels"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal(cfg, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.RuleFiles) != 1 || doc.RuleFiles[0] != alerts.FileName {
		t.Errorf("rule_files %v, want [%s]", doc.RuleFiles, alerts.FileName)
	}
	for _, j := range doc.ScrapeConfigs {
		if j.HonorLabels != (j.JobName == "isoobs") {
			t.Errorf("job %s honor_labels %v", j.JobName, j.HonorLabels)
		}
	}
}

// The splunk pipeline's prometheus receivers (the seed's and the isoobs daemons') are Prometheus
// scrape configs, which the collector's prometheus receiver parses with Prometheus's own config
// code: promtool (the same code) accepts them, the collector's $$ escapes taken as it takes them.
func TestSplunkReceiversArePrometheusScrapeConfigs(t *testing.T) {
	o := testOptions(values.ProfileDefault)
	o.Pipeline, o.Splunk.Realm = values.PipelineSplunk, "us1"
	raw, err := yaml.Marshal(values.SplunkCollector(o)["agent"].(map[string]any)["config"].(map[string]any)["receivers"])
	if err != nil {
		t.Fatal(err)
	}
	var receivers map[string]struct {
		Config struct {
			ScrapeConfigs []any `json:"scrape_configs"`
		} `json:"config"`
	}
	if err := yaml.Unmarshal(raw, &receivers); err != nil {
		t.Fatal(err)
	}
	var jobs []any
	for name, r := range receivers {
		if strings.HasPrefix(name, "prometheus/") {
			jobs = append(jobs, r.Config.ScrapeConfigs...)
		}
	}
	if receivers[values.IsoobsReceiver].Config.ScrapeConfigs == nil || len(jobs) != 6 {
		t.Fatalf("%d prometheus receiver jobs, isoobs receiver %v", len(jobs), receivers[values.IsoobsReceiver])
	}
	cfg, err := yaml.Marshal(map[string]any{"scrape_configs": jobs})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "collector-scrape.yaml")
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(string(cfg), "$$", "$")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(findPromtool(t), "check", "config", file).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s\n%s", err, out, cfg)
	}
}
