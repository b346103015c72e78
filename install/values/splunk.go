package values

import "fmt"

// SplunkTokenKey is the key the splunk-otel-collector chart reads the access token from
// when secret.create is false.
const SplunkTokenKey = "splunk_observability_access_token"

// SplunkMetricAllowlist is seed 000's strict filter/includemetrics list, in its order.
// Without it Cilium and Tetragon produce thousands of series.
var SplunkMetricAllowlist = []string{
	// Kubernetes base metrics
	"container.cpu.usage",
	"container.memory.rss",
	"k8s.container.restarts",
	"k8s.pod.phase",
	"node_namespace_pod_container",
	"tcp.resets",
	"tcp.syn_timeouts",
	// Cilium agent
	"cilium_api_limiter_processed_requests_total",
	"cilium_api_limiter_processing_duration_seconds",
	"cilium_bpf_map_ops_total",
	"cilium_controllers_group_runs_total",
	"cilium_controllers_runs_total",
	"cilium_endpoint_state",
	"cilium_errors_warnings_total",
	"cilium_ip_addresses",
	"cilium_ipam_capacity",
	"cilium_kubernetes_events_total",
	"cilium_policy_l7_total",
	"cilium_proxy_upstream_reply_seconds_bucket",
	// Hubble
	"hubble_dns_queries_total",
	"hubble_dns_responses_total",
	"hubble_drop_total",
	"hubble_flows_processed_total",
	"hubble_http_request_duration_seconds_bucket",
	"hubble_http_requests_total",
	"hubble_icmp_total",
	"hubble_policy_verdicts_total",
	"hubble_tcp_flags_total",
	// Tetragon
	"tetragon_events_total",
	"tetragon_dns_cache_evictions_total",
	"tetragon_dns_cache_misses_total",
	"tetragon_dns_total",
	"tetragon_http_response_total",
	"tetragon_http_stats_latency_bucket",
	"tetragon_http_stats_latency_count",
	"tetragon_http_stats_latency_sum",
	"tetragon_layer3_event_errors_total",
	"tetragon_socket_stats_retransmitsegs_total",
	"tetragon_socket_stats_rxsegs_total",
	"tetragon_socket_stats_srtt_count",
	"tetragon_socket_stats_srtt_sum",
	"tetragon_socket_stats_txbytes_total",
	"tetragon_socket_stats_txsegs_total",
	"tetragon_socket_stats_rxbytes_total",
	"tetragon_socket_stats_udp_retrieve_total",
	"tetragon_socket_stats_udp_txbytes_total",
	"tetragon_socket_stats_udp_txsegs_total",
	"tetragon_socket_stats_udp_rxbytes_total",
	"tetragon_network_connect_total",
	"tetragon_network_close_total",
	"tetragon_network_send_total",
	"tetragon_network_receive_total",
}

// IsoobsMetricAllowlist are the isoobs daemons' metrics the splunk pipeline lets through (strict,
// as the seed's list): the per namespace/workload DNS counters, the latency histogram and the
// daemon's health that deploy/dashboards and deploy/alerts read, named as the collector's
// prometheus receiver names them (a counter keeps _total, a histogram is one metric without
// _bucket/_sum/_count). Never per pod or query name: the daemons export neither.
var IsoobsMetricAllowlist = []string{
	"isoobs_dns_queries_total",
	"isoobs_dns_responses_total",
	"isoobs_dns_timeouts_total",
	"isoobs_dns_unsolicited_responses_total",
	"isoobs_dns_served_responses_total",
	"isoobs_dns_malformed_total",
	"isoobs_dns_latency_seconds",
	"isoobs_lost_total",
	"isoobs_map_entries",
	"isoobs_map_max_entries",
	"isoobs_probes_attached",
	"isoobs_hubble_connected",
}

// IsoobsReceiver scrapes the isoobs daemons (pods app.kubernetes.io/name=isoobs, :9966) into the
// seed's metrics pipeline, after the seed's receivers.
const IsoobsReceiver = "prometheus/isoobs"

// SplunkReceivers are seed 000's receivers in pipeline order.
var SplunkReceivers = []string{
	"prometheus/isovalent_cilium",
	"prometheus/isovalent_envoy",
	"prometheus/isovalent_operator",
	"prometheus/isovalent_tetragon",
	"hostmetrics",
	"kubeletstats",
	"otlp",
}

// scrapeJob is one Prometheus scrape job that keeps pods with a label and
// (when port > 0) points the target at pod IP:port. relabelJob is the job
// label seed 000 writes (it differs from job_name for envoy and operator).
func scrapeJob(jobName, podLabel, labelValue string, port int, relabelJob, interval string) map[string]any {
	relabel := []any{
		map[string]any{
			"source_labels": []any{"__meta_kubernetes_pod_label_" + podLabel},
			"action":        "keep",
			"regex":         labelValue,
		},
	}
	if port > 0 {
		// Seed 000 writes this rule as "target_label: address, replacement:
		// ${__meta_kubernetes_pod_ip}:9962": markdown ate the double underscores.
		// The collector expands ${...} itself, so the capture group is escaped as $$.
		relabel = append(relabel, map[string]any{
			"source_labels": []any{"__meta_kubernetes_pod_ip"},
			"target_label":  "__address__",
			"replacement":   fmt.Sprintf("$${1}:%d", port),
		})
	}
	relabel = append(relabel, map[string]any{"target_label": "job", "replacement": relabelJob})
	return map[string]any{
		"job_name":              jobName,
		"scrape_interval":       interval,
		"metrics_path":          "/metrics",
		"kubernetes_sd_configs": []any{map[string]any{"role": "pod"}},
		"relabel_configs":       relabel,
	}
}

func promReceiver(jobs ...any) map[string]any {
	return map[string]any{"config": map[string]any{"scrape_configs": jobs}}
}

// SplunkCollector returns the splunk-otel-collector chart's values (seed 000).
// The access token is not in them: the chart reads it from the Secret
// TokenSecretName (secret.create=false), which install creates itself.
func SplunkCollector(o Options) map[string]any {
	iv := o.Splunk.ScrapeInterval
	receivers := map[string]any{
		"kubeletstats": map[string]any{"collection_interval": "30s", "insecure_skip_verify": true},
		// Cilium agent (9962) and Hubble (9965) share the k8s-app=cilium pod.
		"prometheus/isovalent_cilium": promReceiver(
			scrapeJob("cilium_metrics_9962", "k8s_app", "cilium", PortCiliumAgent, "cilium_metrics_9962", iv),
			scrapeJob("hubble_metrics_9965", "k8s_app", "cilium", PortHubble, "hubble_metrics_9965", iv),
		),
		"prometheus/isovalent_envoy": promReceiver(
			scrapeJob("envoy_metrics_9964", "k8s_app", "cilium-envoy", PortEnvoy, "cilium_metrics_9964", iv),
		),
		// The operator Deployment declares its metrics port, so the pod target already points at it.
		"prometheus/isovalent_operator": promReceiver(
			scrapeJob("cilium_operator_metrics_9963", "io_cilium_app", "operator", 0, "cilium_metrics_9963", iv),
		),
		"prometheus/isovalent_tetragon": promReceiver(
			scrapeJob("tetragon_metrics_2112", "app_kubernetes_io_name", "tetragon", PortTetragon, "tetragon_metrics_2112", iv),
		),
		IsoobsReceiver: promReceiver(
			scrapeJob("isoobs_metrics_9966", "app_kubernetes_io_name", "isoobs", PortIsoobs, "isoobs_metrics_9966", iv),
		),
	}
	agentConfig := map[string]any{
		"extensions": map[string]any{
			"k8s_observer": map[string]any{"auth_type": "serviceAccount", "observe_pods": true},
		},
		"receivers": receivers,
		"processors": map[string]any{
			"filter/includemetrics": map[string]any{
				"metrics": map[string]any{
					"include": map[string]any{
						"match_type":   "strict",
						"metric_names": toAny(append(append([]string(nil), SplunkMetricAllowlist...), IsoobsMetricAllowlist...)),
					},
				},
			},
			"resourcedetection": map[string]any{
				"detectors": []any{"system"},
				"system":    map[string]any{"hostname_sources": []any{"os"}},
			},
		},
		"service": map[string]any{
			"pipelines": map[string]any{
				"metrics": map[string]any{
					"receivers":  toAny(append(append([]string(nil), SplunkReceivers...), IsoobsReceiver)),
					"processors": []any{"filter/includemetrics", "resourcedetection"},
				},
			},
		},
	}
	v := map[string]any{
		"terminationGracePeriodSeconds": 30,
		"agent":                         map[string]any{"config": agentConfig},
		"autodetect":                    map[string]any{"prometheus": true},
		"clusterName":                   o.ClusterName,
		"environment":                   o.Splunk.Environment,
		"splunkObservability": map[string]any{
			"realm":            o.Splunk.Realm,
			"profilingEnabled": true,
		},
		"secret": map[string]any{
			"create":   false,
			"name":     o.Splunk.TokenSecretName,
			"validate": true,
		},
		"gateway": map[string]any{
			"enabled": o.Splunk.Gateway,
			"resources": map[string]any{
				"requests": map[string]any{"cpu": "250m", "memory": "512Mi"},
				"limits":   map[string]any{"cpu": 1, "memory": "1Gi"},
			},
		},
		"certmanager": map[string]any{"enabled": o.Splunk.CertManager},
	}
	if o.Splunk.CloudProvider != "" {
		v["cloudProvider"] = o.Splunk.CloudProvider
	}
	if o.Splunk.Distribution != "" {
		v["distribution"] = o.Splunk.Distribution
	}
	if o.Profile == ProfileEKSENI {
		if o.Splunk.CloudProvider == "" {
			v["cloudProvider"] = "aws"
		}
		if o.Splunk.Distribution == "" {
			v["distribution"] = "eks"
		}
	}
	return v
}
