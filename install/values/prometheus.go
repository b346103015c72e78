package values

import (
	"fmt"

	"sigs.k8s.io/yaml"
)

// PrometheusScrapeInterval matches Cilium's example monitoring stack (seeds 002/003).
const PrometheusScrapeInterval = "10s"

// promTarget is one component whose pods Prometheus finds by label.
type promTarget struct {
	job       string
	podLabel  string // as a __meta_kubernetes_pod_label_ suffix
	labelVal  string
	port      int
	component string
	// honorLabels keeps the target's own labels where they clash with the job's (namespace):
	// the isoobs daemons' namespace label is the DNS client's namespace, not the daemon pod's.
	honorLabels bool
}

// PrometheusTargets are the scrape jobs of the prometheus pipeline, one per
// component port (the same discovery as seed 000's collector receivers).
var prometheusTargets = []promTarget{
	{"cilium-agent", "k8s_app", "cilium", PortCiliumAgent, "cilium-agent", false},
	{"hubble", "k8s_app", "cilium", PortHubble, "hubble", false},
	{"cilium-envoy", "k8s_app", "cilium-envoy", PortEnvoy, "cilium-envoy", false},
	{"cilium-operator", "io_cilium_app", "operator", PortCiliumOperator, "cilium-operator", false},
	{"tetragon", "app_kubernetes_io_name", "tetragon", PortTetragon, "tetragon", false},
	{"isoobs", "app_kubernetes_io_name", "isoobs", PortIsoobs, "isoobs", true},
}

// PrometheusRulesFile is isoobs' alerting rules file (deploy/alerts) as prometheus.yaml names it:
// relative, so beside prometheus.yaml (PrepareMonitoringChart puts both in one ConfigMap).
const PrometheusRulesFile = "isoobs-alerts.rules.yaml"

// PrometheusJobs lists the job names PrometheusConfig writes, in order.
func PrometheusJobs() []string {
	out := make([]string, len(prometheusTargets))
	for i, t := range prometheusTargets {
		out[i] = t.job
	}
	return out
}

// PrometheusConfig returns prometheus.yaml for the prometheus pipeline: one
// pod-discovery job per component port, labelled with namespace, pod and node
// so the Cilium and Hubble dashboards' variables resolve.
func PrometheusConfig(o Options) ([]byte, error) {
	jobs := make([]any, 0, len(prometheusTargets))
	for _, t := range prometheusTargets {
		jobs = append(jobs, map[string]any{
			"job_name":              t.job,
			"honor_labels":          t.honorLabels,
			"scrape_interval":       PrometheusScrapeInterval,
			"metrics_path":          "/metrics",
			"kubernetes_sd_configs": []any{map[string]any{"role": "pod"}},
			"relabel_configs": []any{
				map[string]any{
					"source_labels": []any{"__meta_kubernetes_pod_label_" + t.podLabel},
					"action":        "keep",
					"regex":         t.labelVal,
				},
				map[string]any{
					"source_labels": []any{"__meta_kubernetes_pod_ip"},
					"target_label":  "__address__",
					"regex":         "(.+)",
					"replacement":   fmt.Sprintf("${1}:%d", t.port),
				},
				map[string]any{"source_labels": []any{"__meta_kubernetes_namespace"}, "target_label": "namespace"},
				map[string]any{"source_labels": []any{"__meta_kubernetes_pod_name"}, "target_label": "pod"},
				map[string]any{"source_labels": []any{"__meta_kubernetes_pod_node_name"}, "target_label": "node"},
				map[string]any{"target_label": "component", "replacement": t.component},
				map[string]any{"target_label": "cluster", "replacement": o.ClusterName},
			},
		})
	}
	cfg := map[string]any{
		"global": map[string]any{
			"scrape_interval":     PrometheusScrapeInterval,
			"scrape_timeout":      PrometheusScrapeInterval,
			"evaluation_interval": PrometheusScrapeInterval,
		},
		"rule_files":     []any{PrometheusRulesFile},
		"scrape_configs": jobs,
	}
	return yaml.Marshal(cfg)
}
