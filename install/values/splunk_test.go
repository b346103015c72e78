package values

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// seed000Allowlist is filter/includemetrics.metrics.include.metric_names of
// seed 000, copied from the seed by hand.
const seed000Allowlist = `container.cpu.usage container.memory.rss k8s.container.restarts k8s.pod.phase
node_namespace_pod_container tcp.resets tcp.syn_timeouts
cilium_api_limiter_processed_requests_total cilium_api_limiter_processing_duration_seconds
cilium_bpf_map_ops_total cilium_controllers_group_runs_total cilium_controllers_runs_total
cilium_endpoint_state cilium_errors_warnings_total cilium_ip_addresses cilium_ipam_capacity
cilium_kubernetes_events_total cilium_policy_l7_total cilium_proxy_upstream_reply_seconds_bucket
hubble_dns_queries_total hubble_dns_responses_total hubble_drop_total hubble_flows_processed_total
hubble_http_request_duration_seconds_bucket hubble_http_requests_total hubble_icmp_total
hubble_policy_verdicts_total hubble_tcp_flags_total
tetragon_events_total tetragon_dns_cache_evictions_total tetragon_dns_cache_misses_total tetragon_dns_total
tetragon_http_response_total tetragon_http_stats_latency_bucket tetragon_http_stats_latency_count
tetragon_http_stats_latency_sum tetragon_layer3_event_errors_total
tetragon_socket_stats_retransmitsegs_total tetragon_socket_stats_rxsegs_total tetragon_socket_stats_srtt_count
tetragon_socket_stats_srtt_sum tetragon_socket_stats_txbytes_total tetragon_socket_stats_txsegs_total
tetragon_socket_stats_rxbytes_total tetragon_socket_stats_udp_retrieve_total tetragon_socket_stats_udp_txbytes_total
tetragon_socket_stats_udp_txsegs_total tetragon_socket_stats_udp_rxbytes_total
tetragon_network_connect_total tetragon_network_close_total tetragon_network_send_total tetragon_network_receive_total`

// get walks a path of map keys.
func get(t *testing.T, v any, path ...string) any {
	t.Helper()
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s: not a map at %q", strings.Join(path, "."), k)
		}
		if v, ok = m[k]; !ok {
			t.Fatalf("%s: no key %q", strings.Join(path, "."), k)
		}
	}
	return v
}

func normalized(t *testing.T, v map[string]any) map[string]any {
	data, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func TestSplunkCollectorMatchesSeed000(t *testing.T) {
	o := Defaults()
	o.Pipeline, o.Profile = PipelineSplunk, ProfileEKSENI
	o.ClusterName, o.Splunk.Realm, o.Splunk.Environment = "isovalent-demo", "us1", "isovalent-demo"
	v := normalized(t, SplunkCollector(o))
	cfg := get(t, v, "agent", "config")

	// Seed 000's list, then the isoobs daemons' names (same strict filter).
	if got, want := strs(get(t, cfg, "processors", "filter/includemetrics", "metrics", "include", "metric_names")), append(strings.Fields(seed000Allowlist), IsoobsMetricAllowlist...); !slices.Equal(got, want) {
		t.Errorf("allowlist differs from seed 000 + isoobs:\n got %v\nwant %v", got, want)
	}
	if mt := get(t, cfg, "processors", "filter/includemetrics", "metrics", "include", "match_type"); mt != "strict" {
		t.Errorf("match_type = %v, want strict", mt)
	}
	wantReceivers := []string{"prometheus/isovalent_cilium", "prometheus/isovalent_envoy", "prometheus/isovalent_operator", "prometheus/isovalent_tetragon", "hostmetrics", "kubeletstats", "otlp", "prometheus/isoobs"}
	if got := strs(get(t, cfg, "service", "pipelines", "metrics", "receivers")); !slices.Equal(got, wantReceivers) {
		t.Errorf("pipeline receivers = %v", got)
	}
	if got := strs(get(t, cfg, "service", "pipelines", "metrics", "processors")); !slices.Equal(got, []string{"filter/includemetrics", "resourcedetection"}) {
		t.Errorf("pipeline processors = %v", got)
	}
	if get(t, cfg, "extensions", "k8s_observer", "auth_type") != "serviceAccount" || get(t, cfg, "extensions", "k8s_observer", "observe_pods") != true {
		t.Error("k8s_observer differs from seed 000")
	}
	if get(t, cfg, "receivers", "kubeletstats", "collection_interval") != "30s" || get(t, cfg, "receivers", "kubeletstats", "insecure_skip_verify") != true {
		t.Error("kubeletstats differs from seed 000")
	}
	// One job per component port, pods found by label (seed 000's table).
	type job struct {
		receiver, name, labelMeta, labelValue, address, jobLabel string
	}
	jobs := []job{
		{"prometheus/isovalent_cilium", "cilium_metrics_9962", "__meta_kubernetes_pod_label_k8s_app", "cilium", "$${1}:9962", "cilium_metrics_9962"},
		{"prometheus/isovalent_cilium", "hubble_metrics_9965", "__meta_kubernetes_pod_label_k8s_app", "cilium", "$${1}:9965", "hubble_metrics_9965"},
		{"prometheus/isovalent_envoy", "envoy_metrics_9964", "__meta_kubernetes_pod_label_k8s_app", "cilium-envoy", "$${1}:9964", "cilium_metrics_9964"},
		{"prometheus/isovalent_operator", "cilium_operator_metrics_9963", "__meta_kubernetes_pod_label_io_cilium_app", "operator", "", "cilium_metrics_9963"},
		{"prometheus/isovalent_tetragon", "tetragon_metrics_2112", "__meta_kubernetes_pod_label_app_kubernetes_io_name", "tetragon", "$${1}:2112", "tetragon_metrics_2112"},
		// Not in the seed: the isoobs daemons, found and relabelled the seed's way.
		{"prometheus/isoobs", "isoobs_metrics_9966", "__meta_kubernetes_pod_label_app_kubernetes_io_name", "isoobs", "$${1}:9966", "isoobs_metrics_9966"},
	}
	seen := map[string]int{}
	for _, j := range jobs {
		scrape := get(t, cfg, "receivers", j.receiver, "config", "scrape_configs").([]any)
		sc := scrape[seen[j.receiver]].(map[string]any)
		seen[j.receiver]++
		if sc["job_name"] != j.name || sc["scrape_interval"] != "30s" || sc["metrics_path"] != "/metrics" {
			t.Errorf("%s: job %v interval %v path %v", j.name, sc["job_name"], sc["scrape_interval"], sc["metrics_path"])
		}
		if role := get(t, sc["kubernetes_sd_configs"].([]any)[0], "role"); role != "pod" {
			t.Errorf("%s: sd role %v", j.name, role)
		}
		rules := sc["relabel_configs"].([]any)
		keep := rules[0].(map[string]any)
		if keep["action"] != "keep" || keep["regex"] != j.labelValue || strs(keep["source_labels"])[0] != j.labelMeta {
			t.Errorf("%s: keep rule %v", j.name, keep)
		}
		last := rules[len(rules)-1].(map[string]any)
		if last["target_label"] != "job" || last["replacement"] != j.jobLabel {
			t.Errorf("%s: job relabel %v, want %s", j.name, last, j.jobLabel)
		}
		if j.address != "" {
			addr := rules[1].(map[string]any)
			if addr["target_label"] != "__address__" || addr["replacement"] != j.address || strs(addr["source_labels"])[0] != "__meta_kubernetes_pod_ip" {
				t.Errorf("%s: address rule %v", j.name, addr)
			}
		} else if len(rules) != 2 {
			t.Errorf("%s: %d rules, want keep + job", j.name, len(rules))
		}
	}
	for key, want := range map[string]any{"clusterName": "isovalent-demo", "environment": "isovalent-demo", "cloudProvider": "aws", "distribution": "eks", "terminationGracePeriodSeconds": float64(30)} {
		if v[key] != want {
			t.Errorf("%s = %v, want %v", key, v[key], want)
		}
	}
	if get(t, v, "splunkObservability", "realm") != "us1" || get(t, v, "splunkObservability", "profilingEnabled") != true {
		t.Error("splunkObservability realm/profiling")
	}
	if _, ok := v["splunkObservability"].(map[string]any)["accessToken"]; ok {
		t.Error("the access token is in the Helm values; it must come from the Secret")
	}
	if get(t, v, "secret", "create") != false || get(t, v, "secret", "name") != "splunk-otel-collector-token" {
		t.Errorf("secret = %v", v["secret"])
	}
	if get(t, v, "gateway", "enabled") != true || get(t, v, "certmanager", "enabled") != true || get(t, v, "autodetect", "prometheus") != true {
		t.Error("gateway/certmanager/autodetect differ from seed 000")
	}
	if get(t, v, "gateway", "resources", "limits", "memory") != "1Gi" || get(t, v, "gateway", "resources", "requests", "cpu") != "250m" {
		t.Error("gateway resources differ from seed 000")
	}
}

func TestValidateErrors(t *testing.T) {
	base := Defaults()
	cases := []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"profile", func(o *Options) { o.Profile = "gke" }, "unknown profile \"gke\": use one of default, kubeadm, eks-eni"},
		{"edition", func(o *Options) { o.Edition = "pro" }, "unknown edition"},
		{"pipeline", func(o *Options) { o.Pipeline = "datadog" }, "unknown pipeline"},
		{"kpr without host", func(o *Options) { o.Profile = ProfileKubeadm }, "--k8s-service-host"},
		{"bad cidr", func(o *Options) {
			o.Profile, o.K8sServiceHost, o.K8sServicePort, o.PodCIDR = ProfileKubeadm, "h", 6443, "10.0.0.0/33"
		}, "--pod-cidr"},
		{"splunk realm", func(o *Options) { o.Pipeline = PipelineSplunk }, "--splunk-realm"},
		{"both header lists", func(o *Options) { o.Redact.HTTPHeadersAllow = []string{"X"} }, "not both"},
	}
	for _, tc := range cases {
		o := base
		o.Redact.HTTPHeadersDeny = slices.Clone(base.Redact.HTTPHeadersDeny)
		tc.mod(&o)
		err := o.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", tc.name, err, tc.want)
		}
	}
	if err := base.Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func TestHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"https://127.0.0.1:6443":                      "127.0.0.1 6443",
		"https://ABC.gr7.us-east-1.eks.amazonaws.com": "ABC.gr7.us-east-1.eks.amazonaws.com 443",
		"https://[fd00::1]:6443/":                     "fd00::1 6443",
	} {
		h, p, err := HostPort(in)
		if err != nil || h+" "+itoa(p) != want {
			t.Errorf("HostPort(%q) = %q %d %v, want %s", in, h, p, err, want)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
