package install

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/lint/support"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/isoobs/isoobs/deploy/alerts"
	"github.com/isoobs/isoobs/install/values"
)

// seed001HubbleMetrics is hubble.metrics.enabled of seed 001, copied from the
// seed by hand (not from package values), so a drift in either shows.
var seed001HubbleMetrics = []string{
	"dns:labelsContext=source_namespace,destination_namespace",
	"drop:labelsContext=source_namespace,destination_namespace",
	"tcp:labelsContext=source_namespace,destination_namespace",
	"port-distribution:labelsContext=source_namespace,destination_namespace",
	"icmp:labelsContext=source_namespace,destination_namespace;sourceContext=workload-name|reserved-identity;destinationContext=workload-name|reserved-identity",
	"flow:sourceContext=workload-name|reserved-identity;destinationContext=workload-name|reserved-identity",
	"httpV2:exemplars=true;labelsContext=source_ip,source_namespace,source_workload,destination_namespace,destination_workload,traffic_direction;sourceContext=workload-name|reserved-identity;destinationContext=workload-name|reserved-identity",
	"policy:sourceContext=app|workload-name|pod|reserved-identity;destinationContext=app|workload-name|pod|dns|reserved-identity;labelsContext=source_namespace,destination_namespace",
	"flow_export",
}

func testOptions(profile values.Profile) values.Options {
	o := values.Defaults()
	o.Profile = profile
	o.ClusterName = "isovalent-demo"
	if profile != values.ProfileDefault {
		o.K8sServiceHost, o.K8sServicePort = "192.168.10.100", 6443
	}
	return o
}

func renderComponent(t *testing.T, c Component, o values.Options, ov Overrides, ch *chart.Chart, apiVersions ...string) []Manifest {
	t.Helper()
	spec := Specs(o.Edition)[c]
	vals, err := FinalValues(c, o, ov)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := Render(ch, spec, vals, "", apiVersions)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Objects(rel)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func configMapData(t *testing.T, objs []Manifest, name string) map[string]string {
	t.Helper()
	cm := Find(objs, "ConfigMap", name)
	if cm == nil {
		t.Fatalf("no ConfigMap %s rendered", name)
	}
	data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
	return data
}

func TestCiliumConfigPerProfile(t *testing.T) {
	ch := loadDir(t, ciliumChartDir(t))
	common := map[string]string{
		"enable-hubble":                   "true",
		"enable-hubble-open-metrics":      "true",
		"hubble-metrics":                  strings.Join(seed001HubbleMetrics[:8], " "), // OSS: no flow_export
		"prometheus-serve-addr":           ":9962",
		"operator-prometheus-serve-addr":  ":9963",
		"hubble-metrics-server":           ":9965",
		"hubble-disable-tls":              "false",
		"hubble-redact-enabled":           "true",
		"hubble-redact-http-urlquery":     "true",
		"hubble-redact-http-userinfo":     "true",
		"hubble-redact-http-headers-deny": "Authorization Proxy-Authorization Cookie Set-Cookie",
		"hubble-export-file-path":         "/var/run/cilium/hubble/events.log",
		"hubble-export-file-max-size-mb":  "10",
		"hubble-export-file-max-backups":  "5",
		"hubble-export-denylist":          `{"source_pod":["kube-system/"]} {"destination_pod":["kube-system/"]}`,
		"cluster-name":                    "isovalent-demo",
	}
	cases := []struct {
		profile values.Profile
		want    map[string]string
		absent  []string
	}{
		{values.ProfileDefault, map[string]string{
			"ipam": "cluster-pool", "routing-mode": "tunnel", "kube-proxy-replacement": "false",
		}, []string{"auto-direct-node-routes", "aws-enable-prefix-delegation"}},
		{values.ProfileKubeadm, map[string]string{
			"ipam": "cluster-pool", "cluster-pool-ipv4-cidr": "172.20.0.0/16", "ipv4-native-routing-cidr": "172.20.0.0/16",
			"routing-mode": "native", "auto-direct-node-routes": "true", "enable-bpf-masquerade": "true",
			"kube-proxy-replacement": "true", "enable-endpoint-routes": "true", "install-no-conntrack-iptables-rules": "true",
		}, []string{"aws-enable-prefix-delegation"}},
		{values.ProfileEKSENI, map[string]string{
			"ipam": "eni", "routing-mode": "native", "enable-ipv4-masquerade": "false", "aws-enable-prefix-delegation": "true",
			"kube-proxy-replacement": "true", "enable-service-topology": "true",
		}, []string{"auto-direct-node-routes", "cluster-pool-ipv4-cidr"}},
	}
	for _, tc := range cases {
		t.Run(string(tc.profile), func(t *testing.T) {
			o := testOptions(tc.profile)
			objs := renderComponent(t, ComponentCilium, o, nil, ch)
			data := configMapData(t, objs, "cilium-config")
			for k, want := range common {
				if got, ok := data[k]; !ok || got != want {
					t.Errorf("cilium-config %s = %q (present %v), want %q", k, got, ok, want)
				}
			}
			for k, want := range tc.want {
				if got, ok := data[k]; !ok || got != want {
					t.Errorf("cilium-config %s = %q (present %v), want %q", k, got, ok, want)
				}
			}
			for _, k := range tc.absent {
				if v, ok := data[k]; ok && v != "false" {
					t.Errorf("cilium-config %s = %q, want it absent for profile %s", k, v, tc.profile)
				}
			}
			// Envoy runs as its own DaemonSet; its metrics port is on the cilium-envoy Service.
			if svc := Find(objs, "Service", "cilium-envoy"); svc == nil {
				t.Error("no cilium-envoy Service")
			} else if ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports"); len(ports) != 1 || ports[0].(map[string]any)["port"] != int64(9964) && ports[0].(map[string]any)["port"] != float64(9964) {
				t.Errorf("cilium-envoy Service ports = %v, want envoy-metrics 9964", ports)
			}
			// Relay with TLS and the UI are on.
			for _, name := range []string{"hubble-relay", "hubble-ui", "cilium-operator"} {
				if Find(objs, "Deployment", name) == nil {
					t.Errorf("no Deployment %s rendered", name)
				}
			}
			relay := configMapData(t, objs, "hubble-relay-config")["config.yaml"]
			for _, want := range []string{"tls-relay-server-cert-file:", "tls-hubble-client-cert-file:"} {
				if !strings.Contains(relay, want) {
					t.Errorf("hubble-relay-config lacks %s (relay TLS)", want)
				}
			}
			ds := Find(objs, "DaemonSet", "cilium")
			if ds == nil {
				t.Fatal("no cilium DaemonSet")
			}
			env := containerEnv(t, ds, "cilium-agent")
			if tc.profile != values.ProfileDefault && (env["KUBERNETES_SERVICE_HOST"] != "192.168.10.100" || env["KUBERNETES_SERVICE_PORT"] != "6443") {
				t.Errorf("cilium-agent KUBERNETES_SERVICE_HOST/PORT = %q/%q, want 192.168.10.100/6443", env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"])
			}
			if n := countKind(objs, "ServiceMonitor"); n != 0 {
				t.Errorf("%d ServiceMonitors rendered without the Prometheus operator CRDs", n)
			}
		})
	}
}

func TestCiliumServiceMonitorsOnlyWithPrometheusOperator(t *testing.T) {
	ch := loadDir(t, ciliumChartDir(t))
	o := testOptions(values.ProfileDefault)
	o.PrometheusOperator = true
	objs := renderComponent(t, ComponentCilium, o, nil, ch, "monitoring.coreos.com/v1", "monitoring.coreos.com/v1/ServiceMonitor")
	var names []string
	for _, m := range objs {
		if m.Object.GetKind() == "ServiceMonitor" {
			names = append(names, m.Object.GetName())
		}
	}
	slices.Sort(names)
	want := []string{"cilium-agent", "cilium-envoy", "cilium-operator", "hubble", "hubble-relay"}
	if !slices.Equal(names, want) {
		t.Errorf("ServiceMonitors = %v, want %v", names, want)
	}
}

func TestCiliumEnterpriseValues(t *testing.T) {
	// The Isovalent chart is not reachable here; rendering the enterprise values with the OSS
	// chart still checks the parts both charts share (the OSS schema accepts unknown keys).
	ch := loadDir(t, ciliumChartDir(t))
	o := testOptions(values.ProfileEKSENI)
	o.Edition = values.EditionEnterprise
	objs := renderComponent(t, ComponentCilium, o, nil, ch)
	data := configMapData(t, objs, "cilium-config")
	if got, want := data["hubble-metrics"], strings.Join(seed001HubbleMetrics, " "); got != want {
		t.Errorf("enterprise hubble-metrics =\n%s\nwant seed 001's set\n%s", got, want)
	}
	if data["external-dns-proxy"] != "true" {
		t.Errorf("external-dns-proxy = %q, want \"true\" (DNS Proxy HA)", data["external-dns-proxy"])
	}
	v := values.Cilium(o)
	gates := v["enterprise"].(map[string]any)["featureGate"].(map[string]any)["approved"]
	if !slices.Equal(gates.([]any), []any{"DNSProxyHA", "HubbleTimescape"}) {
		t.Errorf("feature gates = %v", gates)
	}
	if v["hubble"].(map[string]any)["timescape"].(map[string]any)["enabled"] != true {
		t.Error("hubble.timescape.enabled is not true with the enterprise edition")
	}
}

func TestInvalidSetNamesTheKey(t *testing.T) {
	ch := loadDir(t, ciliumChartDir(t))
	ov, err := ParseOverrides(nil, []string{"cilium.hubble.enabled=maybe"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := FinalValues(ComponentCilium, testOptions(values.ProfileDefault), ov)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Render(ch, Specs(values.EditionOSS)[ComponentCilium], vals, "", nil)
	if err == nil || !strings.Contains(err.Error(), "cilium.hubble.enabled") {
		t.Fatalf("render with --set cilium.hubble.enabled=maybe: err = %v, want one naming hubble.enabled", err)
	}
	t.Log(err)
}

func TestTetragonRender(t *testing.T) {
	ch := loadDir(t, tetragonChartDir(t))
	o := testOptions(values.ProfileDefault)
	objs := renderComponent(t, ComponentTetragon, o, nil, ch)
	data := configMapData(t, objs, "tetragon-config")
	want := map[string]string{
		"metrics-server":       ":2112",
		"metrics-label-filter": "namespace,workload,binary",
		"export-denylist":      "{\"health_check\":true}\n{\"namespace\":[\"\", \"cilium\", \"tetragon\", \"kube-system\", \"otel-splunk\"]}",
		"enable-k8s-api":       "true",
	}
	for k, w := range want {
		if data[k] != w {
			t.Errorf("tetragon-config %s = %q, want %q", k, data[k], w)
		}
	}
	ds := Find(objs, "DaemonSet", "tetragon")
	if ds == nil {
		t.Fatal("no tetragon DaemonSet")
	}
	if Find(objs, "Deployment", "tetragon-operator") == nil {
		t.Error("no tetragon-operator Deployment")
	}
	for _, m := range objs {
		if ns := m.Object.GetNamespace(); ns != "" && ns != values.NamespaceTetragon {
			t.Errorf("%s %s in namespace %s, want %s", m.Object.GetKind(), m.Object.GetName(), ns, values.NamespaceTetragon)
		}
	}
}

func TestDaemonChartRender(t *testing.T) {
	ch, err := LoadChart(context.Background(), Specs(values.EditionOSS)[ComponentIsoobs], Source{})
	if err != nil {
		t.Fatal(err)
	}
	o := testOptions(values.ProfileDefault)
	o.DaemonImage = "registry.local:5000/isoobs/daemon:v9@sha256:abc"
	objs := renderComponent(t, ComponentIsoobs, o, nil, ch)
	ds := Find(objs, "DaemonSet", "isoobs")
	if ds == nil {
		t.Fatal("no isoobs DaemonSet")
	}
	spec := ds.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	if tol, _ := yaml.Marshal(spec["tolerations"]); strings.TrimSpace(string(tol)) != "- operator: Exists" {
		t.Errorf("tolerations = %s, want every taint tolerated", tol)
	}
	if spec["hostNetwork"] != nil || spec["hostPID"] != nil {
		t.Errorf("hostNetwork/hostPID set: %v %v", spec["hostNetwork"], spec["hostPID"])
	}
	c := spec["containers"].([]any)[0].(map[string]any)
	if c["image"] != "registry.local:5000/isoobs/daemon@sha256:abc" {
		t.Errorf("image = %v", c["image"])
	}
	sc := c["securityContext"].(map[string]any)
	if sc["privileged"] != false || sc["readOnlyRootFilesystem"] != true || sc["allowPrivilegeEscalation"] != false {
		t.Errorf("securityContext = %v", sc)
	}
	caps := sc["capabilities"].(map[string]any)
	if !slices.Equal(caps["drop"].([]any), []any{"ALL"}) || !slices.Equal(caps["add"].([]any), []any{"BPF", "PERFMON", "NET_ADMIN"}) {
		t.Errorf("capabilities = %v, want drop ALL, add BPF PERFMON NET_ADMIN", caps)
	}
	var args []string
	for _, a := range c["args"].([]any) {
		args = append(args, a.(string))
	}
	for _, want := range []string{"--node-name=$(NODE_NAME)", "--grpc-listen=127.0.0.1:9967", "--grpc-listen=unix:///run/isoobs/isoobs.sock", "--metrics-listen=:9966", "--interval=1s", "--hubble-server=unix:///var/run/cilium/hubble-socket/hubble.sock"} {
		if !slices.Contains(args, want) {
			t.Errorf("args %v lack %s", args, want)
		}
	}
	nodeName, _ := yaml.Marshal(c["env"].([]any)[0])
	if !strings.Contains(string(nodeName), "fieldPath: spec.nodeName") {
		t.Errorf("NODE_NAME env = %s, want the downward API", nodeName)
	}
	if env := c["env"].([]any); len(env) < 2 || env[1].(map[string]any)["name"] != "GOMEMLIMIT" || env[1].(map[string]any)["value"] != "32MiB" {
		t.Errorf("env %v lacks GOMEMLIMIT=32MiB", env)
	}
	if p := c["readinessProbe"].(map[string]any)["httpGet"].(map[string]any)["path"]; p != "/readyz" {
		t.Errorf("readiness path %v", p)
	}
	if p := c["livenessProbe"].(map[string]any)["httpGet"].(map[string]any)["path"]; p != "/healthz" {
		t.Errorf("liveness path %v", p)
	}
	if c["resources"] == nil {
		t.Error("no resources")
	}
	// bpffs is not mounted (nothing is pinned; a HostToContainer mount fails on nodes where
	// /sys/fs/bpf is private), and Cilium's run directory is never created by the daemon's pod.
	wantPaths := map[string]string{"cgroup": "/sys/fs/cgroup Directory", "hubble-socket": "/var/run/cilium/hubble-socket Directory", "run": "/run/isoobs DirectoryOrCreate"}
	if got := daemonHostPaths(spec); !maps.Equal(got, wantPaths) {
		t.Errorf("hostPath volumes = %v, want %v", got, wantPaths)
	}
	// Without a Hubble socket (install on a cluster without Cilium) nothing of Cilium's is mounted.
	o.HubbleAddress = "off"
	offSpec := Find(renderComponent(t, ComponentIsoobs, o, nil, ch), "DaemonSet", "isoobs").Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	delete(wantPaths, "hubble-socket")
	if got := daemonHostPaths(offSpec); !maps.Equal(got, wantPaths) {
		t.Errorf("hubble off: hostPath volumes = %v, want %v", got, wantPaths)
	}
	for _, m := range offSpec["containers"].([]any)[0].(map[string]any)["volumeMounts"].([]any) {
		if name := m.(map[string]any)["name"]; name == "hubble-socket" {
			t.Error("hubble off: hubble-socket still mounted")
		}
	}
	role := Find(objs, "ClusterRole", "isoobs")
	if role == nil {
		t.Fatal("no ClusterRole")
	}
	for _, r := range role.Object["rules"].([]any) {
		for _, verb := range r.(map[string]any)["verbs"].([]any) {
			if !slices.Contains([]string{"get", "list", "watch"}, verb.(string)) {
				t.Errorf("ClusterRole grants %s: the daemon must be read-only", verb)
			}
		}
	}
	if Find(objs, "ServiceAccount", "isoobs") == nil || Find(objs, "ClusterRoleBinding", "isoobs") == nil {
		t.Error("no ServiceAccount/ClusterRoleBinding")
	}
}

// Kernel map sizes reach the daemon's flags only when set; 0 keeps the
// probe's defaults and adds no flag. Latency sampling is always passed.
func TestDaemonChartKernelMaps(t *testing.T) {
	ch, err := LoadChart(context.Background(), Specs(values.EditionOSS)[ComponentIsoobs], Source{})
	if err != nil {
		t.Fatal(err)
	}
	kernelArgs := func(ov Overrides) []string {
		objs := renderComponent(t, ComponentIsoobs, testOptions(values.ProfileDefault), ov, ch)
		ds := Find(objs, "DaemonSet", "isoobs")
		if ds == nil {
			t.Fatal("no isoobs DaemonSet")
		}
		spec := ds.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
		var out []string
		for _, a := range spec["containers"].([]any)[0].(map[string]any)["args"].([]any) {
			if strings.HasPrefix(a.(string), "--kernel-") || strings.HasPrefix(a.(string), "--latency-") {
				out = append(out, a.(string))
			}
		}
		return out
	}
	if got, want := kernelArgs(nil), []string{"--latency-sample-above=2000"}; !slices.Equal(got, want) {
		t.Errorf("defaults: kernel flags %v, want %v", got, want)
	}
	ov := Overrides{ComponentIsoobs: {"kernelMaps": map[string]any{"maxInflight": 4096, "podSlots": 512}, "latencySampleAbove": 1000000}}
	want := []string{"--latency-sample-above=1000000", "--kernel-max-inflight=4096", "--kernel-pod-slots=512"}
	if got := kernelArgs(ov); !slices.Equal(got, want) {
		t.Errorf("kernel flags %v, want %v", got, want)
	}
}

func TestDaemonChartLint(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "isoobs")
	if err := os.CopyFS(dir, chartFS()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		vals map[string]any
	}{
		{"defaults", nil},
		{"install values", values.Daemon(testOptions(values.ProfileDefault))},
	} {
		res := lintChart(dir, tc.vals)
		for _, m := range res.Messages {
			if m.Severity >= support.WarningSev {
				t.Errorf("%s: helm lint --strict: %s", tc.name, m)
			}
		}
		for _, err := range res.Errors {
			t.Errorf("%s: helm lint: %v", tc.name, err)
		}
	}
}

func TestMonitoringChartAndPromtool(t *testing.T) {
	o := testOptions(values.ProfileDefault)
	cfg, err := values.PrometheusConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	promtool := findPromtool(t)
	file := filepath.Join(t.TempDir(), "prometheus.yaml")
	if err := os.WriteFile(file, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	// prometheus.yaml names the alerting rules beside it; promtool checks them too.
	if err := os.WriteFile(filepath.Join(filepath.Dir(file), values.PrometheusRulesFile), alerts.Rules(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "config", file).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s\n%s", err, out, cfg)
	}
	// promtool must be able to fail: a broken relabel rule is refused.
	bad := strings.Replace(string(cfg), "action: keep", "action: keeep", 1)
	if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "config", file).CombinedOutput(); err == nil {
		t.Fatalf("promtool accepted a broken config:\n%s", out)
	}

	mon := loadDir(t, monitoringChartDir(t))
	if err := PrepareMonitoringChart(mon, loadDir(t, ciliumChartDir(t)), cfg); err != nil {
		t.Fatal(err)
	}
	objs := renderComponent(t, ComponentPrometheus, o, nil, mon)
	if got := configMapData(t, objs, "prometheus")["prometheus.yaml"]; strings.TrimSpace(got) != strings.TrimSpace(string(cfg)) {
		t.Errorf("prometheus ConfigMap holds\n%s\nwant the generated config", got)
	}
	var dashboards []string
	for _, m := range objs {
		if m.Object.GetKind() == "ConfigMap" && strings.HasPrefix(m.Object.GetName(), "grafana-") && m.Object.GetName() != "grafana-config" {
			dashboards = append(dashboards, m.Object.GetName())
		}
	}
	slices.Sort(dashboards)
	want := []string{"grafana-cilium-dashboard", "grafana-cilium-operator-dashboard", "grafana-hubble-dashboard", "grafana-hubble-dns-namespace", "grafana-hubble-l7-http-metrics-by-workload", "grafana-hubble-network-overview-namespace", "grafana-isoobs-dns", "grafana-isoobs-tcp"}
	if !slices.Equal(dashboards, want) {
		t.Errorf("dashboards = %v, want %v", dashboards, want)
	}
	if got := configMapData(t, objs, "grafana-isoobs-dns")["isoobs-dns.json"]; !strings.Contains(got, `"uid": "isoobs-dns"`) {
		t.Errorf("grafana-isoobs-dns ConfigMap holds %.200q, want deploy/dashboards/isoobs-dns.json", got)
	}
	if got := configMapData(t, objs, "prometheus")[values.PrometheusRulesFile]; got != string(alerts.Rules()) {
		t.Errorf("prometheus ConfigMap's %s is %.200q, want deploy/alerts' rules", values.PrometheusRulesFile, got)
	}
	for _, name := range []string{"prometheus", "grafana"} {
		if Find(objs, "Deployment", name) == nil {
			t.Errorf("no Deployment %s", name)
		}
	}
}

func containerEnv(t *testing.T, obj *unstructured.Unstructured, container string) map[string]string {
	t.Helper()
	cs, _, _ := unstructured.NestedSlice(obj.Object, "spec", "template", "spec", "containers")
	for _, c := range cs {
		c := c.(map[string]any)
		if c["name"] != container {
			continue
		}
		env := map[string]string{}
		for _, e := range c["env"].([]any) {
			e := e.(map[string]any)
			if v, ok := e["value"].(string); ok {
				env[e["name"].(string)] = v
			}
		}
		return env
	}
	t.Fatalf("%s has no container %s", obj.GetName(), container)
	return nil
}

func countKind(objs []Manifest, kind string) int {
	n := 0
	for _, m := range objs {
		if m.Object.GetKind() == kind {
			n++
		}
	}
	return n
}

// findPromtool returns a promtool that knows kubernetes_sd_configs:
// $ISOOBS_PROMTOOL, the one install/scripts/build-promtool.sh caches, or
// promtool on PATH. Debian's promtool is built without Kubernetes discovery
// and rejects every kubernetes_sd_configs, so it is only used if it accepts one.
func findPromtool(t *testing.T) string {
	t.Helper()
	var candidates []string
	if p := os.Getenv("ISOOBS_PROMTOOL"); p != "" {
		candidates = append(candidates, p)
	}
	cache := os.Getenv("ISOOBS_CACHE")
	if cache == "" {
		if dir, err := os.UserCacheDir(); err == nil {
			cache = filepath.Join(dir, "isoobs")
		}
	}
	candidates = append(candidates, filepath.Join(cache, "bin/promtool-v0.307.0/promtool"))
	if p, err := exec.LookPath("promtool"); err == nil {
		candidates = append(candidates, p)
	}
	probe := filepath.Join(t.TempDir(), "probe.yaml")
	if err := os.WriteFile(probe, []byte("scrape_configs:\n- job_name: probe\n  kubernetes_sd_configs:\n  - role: pod\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var tried []string
	for _, c := range candidates {
		out, err := exec.Command(c, "check", "config", probe).CombinedOutput()
		if err == nil {
			return c
		}
		tried = append(tried, fmt.Sprintf("%s: %v %s", c, err, strings.TrimSpace(string(out))))
	}
	t.Skipf("no promtool with Kubernetes service discovery (run install/scripts/build-promtool.sh, or set ISOOBS_PROMTOOL); tried:\n%s", strings.Join(tried, "\n"))
	return ""
}

// daemonHostPaths maps each hostPath volume of a pod spec to "path type".
func daemonHostPaths(spec map[string]any) map[string]string {
	out := map[string]string{}
	for _, v := range spec["volumes"].([]any) {
		v := v.(map[string]any)
		if hp, ok := v["hostPath"].(map[string]any); ok {
			out[v["name"].(string)] = fmt.Sprint(hp["path"], " ", hp["type"])
		}
	}
	return out
}
