// Package values generates the Helm values of every component
// `kubectl isoobs install` puts in place (Cilium, Tetragon, the metrics
// pipeline, the isoobs daemon), per profile, edition and pipeline, as the
// seed runbooks set them up by hand.
package values

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/isoobs/isoobs/deploy"
)

// Profile picks the Cilium datapath settings for a kind of cluster.
type Profile string

const (
	// ProfileDefault keeps the chart's datapath defaults (cluster-pool IPAM, VXLAN tunnel, kube-proxy kept).
	ProfileDefault Profile = "default"
	// ProfileKubeadm is seed 003: cluster-pool IPAM, native routing with direct node routes,
	// BPF masquerading and kube-proxy replacement.
	ProfileKubeadm Profile = "kubeadm"
	// ProfileEKSENI is seed 001: AWS ENI IPAM with prefix delegation, native VPC routing,
	// no IPv4 masquerading, kube-proxy replacement.
	ProfileEKSENI Profile = "eks-eni"
)

// Profiles lists the valid profiles in help order.
var Profiles = []Profile{ProfileDefault, ProfileKubeadm, ProfileEKSENI}

// Edition picks OSS or Isovalent Enterprise charts and features.
type Edition string

const (
	EditionOSS        Edition = "oss"
	EditionEnterprise Edition = "enterprise"
)

// Editions lists the valid editions.
var Editions = []Edition{EditionOSS, EditionEnterprise}

// Pipeline picks where the metrics go.
type Pipeline string

const (
	PipelinePrometheus Pipeline = "prometheus"
	PipelineSplunk     Pipeline = "splunk"
	PipelineNone       Pipeline = "none"
)

// Pipelines lists the valid pipelines.
var Pipelines = []Pipeline{PipelinePrometheus, PipelineSplunk, PipelineNone}

// Metrics ports every component serves (seed 000's receiver table).
const (
	PortCiliumAgent    = 9962
	PortCiliumOperator = 9963
	PortEnvoy          = 9964
	PortHubble         = 9965
	PortIsoobs         = 9966
	PortIsoobsGRPC     = 9967
	PortTetragon       = 2112
)

// Namespaces the components are installed into (the seeds' choices).
const (
	NamespaceCilium     = "kube-system"
	NamespaceTetragon   = "tetragon"
	NamespaceSplunk     = "otel-splunk"
	NamespacePrometheus = "cilium-monitoring" // hard-coded by Cilium's example monitoring chart
	NamespaceIsoobs     = "isoobs"
)

// HubbleMetricsOSS is seed 001's Hubble metric set without flow_export, which
// only exists in Isovalent Enterprise (Timescape); OSS cilium-agent refuses to
// start on an unknown metric ("metric \"flow_export\" does not exist").
var HubbleMetricsOSS = []string{
	"dns:labelsContext=source_namespace,destination_namespace",
	"drop:labelsContext=source_namespace,destination_namespace",
	"tcp:labelsContext=source_namespace,destination_namespace",
	"port-distribution:labelsContext=source_namespace,destination_namespace",
	"icmp:labelsContext=source_namespace,destination_namespace;sourceContext=workload-name|reserved-identity;destinationContext=workload-name|reserved-identity",
	"flow:sourceContext=workload-name|reserved-identity;destinationContext=workload-name|reserved-identity",
	"httpV2:exemplars=true;labelsContext=source_ip,source_namespace,source_workload,destination_namespace,destination_workload,traffic_direction;sourceContext=workload-name|reserved-identity;destinationContext=workload-name|reserved-identity",
	"policy:sourceContext=app|workload-name|pod|reserved-identity;destinationContext=app|workload-name|pod|dns|reserved-identity;labelsContext=source_namespace,destination_namespace",
}

// HubbleMetricsEnterprise is seed 001's full set.
var HubbleMetricsEnterprise = append(append([]string(nil), HubbleMetricsOSS...), "flow_export")

// RedactOptions are the Hubble L7 redaction settings (seed 003).
type RedactOptions struct {
	Enabled      bool
	HTTPURLQuery bool
	HTTPUserInfo bool
	// At most one of the header lists may be set (the agent refuses both).
	HTTPHeadersAllow []string
	HTTPHeadersDeny  []string
}

// ExportOptions configure Hubble's flow exporter to a file (seed 003).
type ExportOptions struct {
	Enabled    bool
	FilePath   string
	MaxSizeMB  int
	MaxBackups int
	// AllowList/DenyList are Hubble flow filters as JSON objects, e.g. {"source_pod":["kube-system/"]}.
	AllowList []string
	DenyList  []string
	FieldMask []string
}

// SplunkOptions configure the Splunk OpenTelemetry Collector (seed 000).
type SplunkOptions struct {
	Realm         string
	Environment   string
	CloudProvider string
	Distribution  string
	Gateway       bool
	CertManager   bool
	// TokenSecretName is the Secret holding key splunk_observability_access_token.
	// The token itself never enters Helm values.
	TokenSecretName string
	ScrapeInterval  string
}

// Options is everything the values depend on.
type Options struct {
	Profile  Profile
	Edition  Edition
	Pipeline Pipeline

	ClusterName string
	ClusterID   int
	// K8sServiceHost/Port: the API server as nodes reach it, needed with kube-proxy replacement.
	K8sServiceHost string
	K8sServicePort int
	// PodCIDR is the cluster-pool range of the kubeadm profile (seed 003: 172.20.0.0/16).
	PodCIDR string

	// PrometheusOperator is true when the monitoring.coreos.com/v1 ServiceMonitor CRD exists.
	PrometheusOperator bool

	Redact RedactOptions
	Export ExportOptions
	Splunk SplunkOptions

	DaemonImage    string // repository[:tag] or repository@sha256:...
	DaemonInterval string
	HubbleAddress  string
}

// Hubble's node-local socket where isoobs installs Cilium: in a directory of its own, so the
// isoobs daemon mounts only that directory. Cilium's default, /var/run/cilium/hubble.sock, sits
// beside cilium.sock (the agent's full API), the monitor and health sockets: a pod that mounts
// the directory can connect() to all of them, read-only or not. A directory (not the socket
// file) is mounted because the agent recreates the socket on every start, and a bind mount of
// the file would keep pointing at the old one.
const (
	HubbleSocketDir  = "/var/run/cilium/hubble-socket"
	HubbleSocketPath = HubbleSocketDir + "/hubble.sock"
)

// Defaults returns the options `kubectl isoobs install` starts from.
func Defaults() Options {
	return Options{
		Profile:     ProfileDefault,
		Edition:     EditionOSS,
		Pipeline:    PipelinePrometheus,
		ClusterName: "default",
		PodCIDR:     "172.20.0.0/16",
		Redact: RedactOptions{
			Enabled:         true,
			HTTPURLQuery:    true,
			HTTPUserInfo:    true,
			HTTPHeadersDeny: []string{"Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie"},
		},
		Export: ExportOptions{
			Enabled:    true,
			FilePath:   "/var/run/cilium/hubble/events.log",
			MaxSizeMB:  10,
			MaxBackups: 5,
			// Keep the exporter to workload traffic: drop the system namespaces' own chatter.
			DenyList:  []string{`{"source_pod":["kube-system/"]}`, `{"destination_pod":["kube-system/"]}`},
			FieldMask: []string{"time", "source.namespace", "source.pod_name", "destination.namespace", "destination.pod_name", "l4", "IP", "l7", "Type", "verdict", "drop_reason_desc"},
		},
		Splunk: SplunkOptions{
			Environment:     "isoobs",
			Gateway:         true,
			CertManager:     true,
			TokenSecretName: "splunk-otel-collector-token",
			ScrapeInterval:  "30s",
		},
		DaemonInterval: "1s",
		HubbleAddress:  "unix://" + HubbleSocketPath,
	}
}

// Validate checks the options together; errors say which flag to fix.
func (o Options) Validate() error {
	if !oneOf(o.Profile, Profiles) {
		return fmt.Errorf("unknown profile %q: use one of %s", o.Profile, join(Profiles))
	}
	if !oneOf(o.Edition, Editions) {
		return fmt.Errorf("unknown edition %q: use one of %s", o.Edition, join(Editions))
	}
	if !oneOf(o.Pipeline, Pipelines) {
		return fmt.Errorf("unknown pipeline %q: use one of %s", o.Pipeline, join(Pipelines))
	}
	if o.ClusterName == "" {
		return fmt.Errorf("the cluster name is empty: pass --cluster-name NAME")
	}
	if o.ClusterID < 0 || o.ClusterID > 511 {
		return fmt.Errorf("cluster id %d is out of range: Cilium accepts 0-511", o.ClusterID)
	}
	if o.K8sServicePort < 0 || o.K8sServicePort > 65535 {
		return fmt.Errorf("--k8s-service-port %d is not a port", o.K8sServicePort)
	}
	if o.Profile != ProfileDefault && (o.K8sServiceHost == "" || o.K8sServicePort == 0) {
		return fmt.Errorf("profile %s replaces kube-proxy, so Cilium needs the API server address as nodes reach it: pass --k8s-service-host HOST --k8s-service-port PORT (or a kubeconfig whose server is that address)", o.Profile)
	}
	if o.Profile == ProfileKubeadm {
		if _, _, err := net.ParseCIDR(o.PodCIDR); err != nil {
			return fmt.Errorf("--pod-cidr %q is not a CIDR (e.g. 172.20.0.0/16)", o.PodCIDR)
		}
	}
	if len(o.Redact.HTTPHeadersAllow) > 0 && len(o.Redact.HTTPHeadersDeny) > 0 {
		return fmt.Errorf("redaction: give either an HTTP header allow list or a deny list, not both (cilium-agent refuses both)")
	}
	if o.Pipeline == PipelineSplunk && o.Splunk.Realm == "" {
		return fmt.Errorf("the splunk pipeline needs the Splunk Observability realm: pass --splunk-realm REALM (e.g. us1)")
	}
	return nil
}

// Cilium returns the cilium chart's values (seeds 001 and 003).
func Cilium(o Options) map[string]any {
	sm := func() map[string]any { return map[string]any{"enabled": o.PrometheusOperator} }
	metrics := HubbleMetricsOSS
	if o.Edition == EditionEnterprise {
		metrics = HubbleMetricsEnterprise
	}
	hubble := map[string]any{
		"enabled": true,
		"metrics": map[string]any{
			"enableOpenMetrics": true,
			"port":              PortHubble,
			"enabled":           toAny(metrics),
			"serviceMonitor":    sm(),
		},
		"tls": map[string]any{
			"enabled": true,
			"auto": map[string]any{
				"enabled":              true,
				"method":               "cronJob",
				"certValidityDuration": 1095,
			},
		},
		"relay": map[string]any{
			"enabled": true,
			"tls":     map[string]any{"server": map[string]any{"enabled": true}},
			"prometheus": map[string]any{
				"enabled":        true,
				"serviceMonitor": sm(),
			},
		},
		"ui": map[string]any{"enabled": true},
		// See HubbleSocketDir. Cilium does not create the socket's directory: the agent's pod
		// gets it as a hostPath (DirectoryOrCreate, below), so the kubelet makes it first.
		"socketPath": HubbleSocketPath,
	}
	if o.Redact.Enabled {
		headers := map[string]any{}
		if len(o.Redact.HTTPHeadersAllow) > 0 {
			headers["allow"] = toAny(o.Redact.HTTPHeadersAllow)
		}
		if len(o.Redact.HTTPHeadersDeny) > 0 {
			headers["deny"] = toAny(o.Redact.HTTPHeadersDeny)
		}
		hubble["redact"] = map[string]any{
			"enabled": true,
			"http": map[string]any{
				"urlQuery": o.Redact.HTTPURLQuery,
				"userInfo": o.Redact.HTTPUserInfo,
				"headers":  headers,
			},
		}
	}
	if o.Export.Enabled {
		hubble["export"] = map[string]any{
			"static": map[string]any{
				"enabled":        true,
				"filePath":       o.Export.FilePath,
				"fileMaxSizeMb":  o.Export.MaxSizeMB,
				"fileMaxBackups": o.Export.MaxBackups,
				"allowList":      toAny(o.Export.AllowList),
				"denyList":       toAny(o.Export.DenyList),
				"fieldMask":      toAny(o.Export.FieldMask),
			},
		}
	}
	v := map[string]any{
		"cluster": map[string]any{"name": o.ClusterName, "id": o.ClusterID},
		"debug":   map[string]any{"enabled": false},
		"tls":     map[string]any{"ca": map[string]any{"certValidityDuration": 3650}},
		"hubble":  hubble,
		"extraHostPathMounts": []any{map[string]any{
			"name": "hubble-socket", "mountPath": HubbleSocketDir, "hostPath": HubbleSocketDir,
			"hostPathType": "DirectoryOrCreate", "readOnly": false,
		}},
		// `hubble observe` inside the agent's pod (kubectl exec) finds the moved socket.
		"extraEnv": []any{map[string]any{"name": "HUBBLE_SERVER", "value": "unix://" + HubbleSocketPath}},
		"prometheus": map[string]any{
			"enabled":        true,
			"port":           PortCiliumAgent,
			"serviceMonitor": sm(),
		},
		"operator": map[string]any{
			"prometheus": map[string]any{
				"enabled":        true,
				"port":           PortCiliumOperator,
				"serviceMonitor": sm(),
			},
		},
		"envoy": map[string]any{
			"prometheus": map[string]any{
				"enabled":        true,
				"port":           strconv.Itoa(PortEnvoy), // the chart's schema wants a string here
				"serviceMonitor": sm(),
			},
		},
	}
	if o.K8sServiceHost != "" {
		v["k8sServiceHost"] = o.K8sServiceHost
		v["k8sServicePort"] = o.K8sServicePort
	}
	switch o.Profile {
	case ProfileKubeadm:
		v["ipam"] = map[string]any{
			"mode":     "cluster-pool",
			"operator": map[string]any{"clusterPoolIPv4PodCIDRList": []any{o.PodCIDR}},
		}
		v["ipv4NativeRoutingCIDR"] = o.PodCIDR
		v["routingMode"] = "native"
		v["autoDirectNodeRoutes"] = true
		v["endpointRoutes"] = map[string]any{"enabled": true}
		v["kubeProxyReplacement"] = true
		v["bpf"] = map[string]any{"masquerade": true}
		v["installNoConntrackIptablesRules"] = true
	case ProfileEKSENI:
		v["eni"] = map[string]any{
			"enabled":                     true,
			"updateEC2AdapterLimitViaAPI": true,
			"awsEnablePrefixDelegation":   true,
		}
		v["ipam"] = map[string]any{"mode": "eni"}
		v["enableIPv4Masquerade"] = false
		v["loadBalancer"] = map[string]any{"serviceTopology": true}
		v["routingMode"] = "native"
		v["kubeProxyReplacement"] = true
	}
	if o.Edition == EditionEnterprise {
		hubble["timescape"] = map[string]any{"enabled": true}
		v["extraConfig"] = map[string]any{"external-dns-proxy": "true"}
		v["enterprise"] = map[string]any{
			"featureGate": map[string]any{"approved": []any{"DNSProxyHA", "HubbleTimescape"}},
		}
	}
	return v
}

// DNSProxy returns the Isovalent cilium-dnsproxy chart's values (seed 001, enterprise only).
func DNSProxy(o Options) map[string]any {
	return map[string]any{
		"enableCriticalPriorityClass": true,
		"metrics":                     map[string]any{"serviceMonitor": map[string]any{"enabled": o.PrometheusOperator}},
	}
}

// TetragonExportDenyList keeps system namespaces' events out of the export (seed 001).
const TetragonExportDenyList = `{"health_check":true}
{"namespace":["", "cilium", "tetragon", "kube-system", "otel-splunk"]}`

// TetragonMetricsLabelFilter keeps metric cardinality to what the network views use (seed 001).
const TetragonMetricsLabelFilter = "namespace,workload,binary"

// Tetragon returns the tetragon chart's values. The enterprise chart gets
// seed 001's network observability keys; the OSS chart (v1.0.0 here) has no
// such keys, see TetragonOSSGaps.
func Tetragon(o Options) map[string]any {
	tetragon := map[string]any{
		"exportDenyList": TetragonExportDenyList,
		"prometheus": map[string]any{
			"enabled":            true,
			"port":               PortTetragon,
			"metricsLabelFilter": TetragonMetricsLabelFilter,
			"serviceMonitor":     map[string]any{"enabled": o.PrometheusOperator},
		},
		"resources": map[string]any{
			"limits":   map[string]any{"cpu": "500m", "memory": "1Gi"},
			"requests": map[string]any{"cpu": "100m", "memory": "256Mi"},
		},
	}
	v := map[string]any{"tetragon": tetragon}
	if o.Edition == EditionEnterprise {
		tetragon["enableEvents"] = map[string]any{"network": true}
		tetragon["layer3"] = map[string]any{
			"tcp":     map[string]any{"enabled": true, "rtt": map[string]any{"enabled": true}},
			"udp":     map[string]any{"enabled": true},
			"icmp":    map[string]any{"enabled": true},
			"latency": map[string]any{"enabled": true},
		}
		tetragon["dns"] = map[string]any{"enabled": true}
		tetragon["metricsLabelFilter"] = TetragonMetricsLabelFilter
		v["tetragonOperator"] = map[string]any{
			"enabled":       true,
			"tracingPolicy": map[string]any{"enabled": true},
		}
	}
	return v
}

// TetragonOSSGaps says what the OSS Tetragon chart cannot give that seed 001's
// enterprise network observability does; install prints it with --edition oss.
const TetragonOSSGaps = `OSS Tetragon has no network observability mode (tetragon.enableEvents.network, layer3 tcp/udp/icmp with RTT and latency, dns):
  the tetragon_socket_stats_*, tetragon_network_*, tetragon_dns_* and tetragon_layer3_* metrics of the seed 000 allowlist stay empty.
  What OSS gives instead: process exec/exit events and tetragon_events_total on :2112; TCP connect/close/send visibility needs
  TracingPolicies on tcp_connect/tcp_close/tcp_sendmsg kprobes (kubectl apply them after install). isoobs' own daemon covers
  DNS and TCP golden signals (top dns, top tcp) without Tetragon.`

// Daemon returns the isoobs daemon chart's values.
func Daemon(o Options) map[string]any {
	v := map[string]any{
		"interval": o.DaemonInterval,
		"hubble":   map[string]any{"address": o.HubbleAddress},
		"metrics": map[string]any{
			"serviceMonitor": map[string]any{"enabled": o.PrometheusOperator},
			// The alerting rules of deploy/alerts as a PrometheusRule (install adds the template).
			"prometheusRule": map[string]any{"enabled": o.PrometheusOperator},
		},
	}
	if o.DaemonImage != "" {
		repo, tag, digest := splitImage(o.DaemonImage)
		img := map[string]any{"repository": repo}
		if tag != "" {
			img["tag"] = tag
		}
		if digest != "" {
			img["digest"] = digest
		}
		v["image"] = img
	} else if img := deploy.DaemonImageValues(); img != nil {
		// The image this plugin was released with (make image + make build), pinned by digest.
		v["image"] = img
	}
	return v
}

// splitImage splits repository[:tag][@digest]; a colon in the host's port is not a tag.
func splitImage(ref string) (repo, tag, digest string) {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref, digest = ref[:i], ref[i+1:]
	}
	slash := strings.LastIndex(ref, "/")
	if i := strings.LastIndex(ref, ":"); i > slash {
		ref, tag = ref[:i], ref[i+1:]
	}
	return ref, tag, digest
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func oneOf[T comparable](v T, valid []T) bool {
	for _, x := range valid {
		if v == x {
			return true
		}
	}
	return false
}

func join[T ~string](vs []T) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = string(v)
	}
	return strings.Join(parts, ", ")
}

// HostPort splits a kubeconfig server URL (https://host:port) into the
// k8sServiceHost/Port Cilium wants; port defaults to 443.
func HostPort(server string) (string, int, error) {
	s := server
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	}
	s = strings.TrimSuffix(s, "/")
	if i := strings.Index(s, "/"); i >= 0 {
		s = s[:i]
	}
	if s == "" {
		return "", 0, fmt.Errorf("kubeconfig server %q has no host", server)
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return strings.Trim(s, "[]"), 443, nil
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return "", 0, fmt.Errorf("kubeconfig server %q has a bad port", server)
	}
	return host, port, nil
}
