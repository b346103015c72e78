package verify

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"

	"github.com/isoobs/isoobs/install/values"
)

// SeedAllowlist is seed 000's OpenTelemetry collector filter
// (filter/includemetrics, match_type strict) — the list install writes into the
// collector — split by the component whose endpoint serves each name.
// Kubernetes base metrics are left out (they do not come from the stack's endpoints).
var SeedAllowlist = allowlistByComponent(values.SplunkMetricAllowlist)

func allowlistByComponent(names []string) map[string][]string {
	prefixes := map[string]string{"cilium_": "cilium-agent", "hubble_": "hubble", "tetragon_": "tetragon"}
	out := map[string][]string{}
	for _, n := range names {
		for prefix, component := range prefixes {
			if strings.HasPrefix(n, prefix) {
				out[component] = append(out[component], n)
			}
		}
	}
	return out
}

// trafficDependent names are metric vectors whose series only appear once
// matching traffic was seen (DNS and HTTP only under an L7 policy, drops only
// when something drops): their absence is a warning, not a broken endpoint.
func trafficDependent(name string) bool {
	for _, p := range []string{"hubble_dns_", "hubble_http_", "hubble_drop_", "hubble_icmp_", "hubble_policy_verdicts_",
		"cilium_proxy_upstream_reply_seconds", "tetragon_dns_", "tetragon_http_"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// tetragonEnterpriseOnly: OSS Tetragon (checked against v1.0.0's
// pkg/metrics) exports none of the network-observability metrics seed 000
// filters on; they come from Isovalent Enterprise Tetragon.
func tetragonEnterpriseOnly(name string) bool {
	return strings.HasPrefix(name, "tetragon_") && name != "tetragon_events_total"
}

type metricsEndpoint struct {
	name     string
	ns       func(*env) string
	selector string
	port     int
	// expected are allowlist names; prefix: at least one name with it.
	expected []string
	prefix   string
}

var (
	endpointAgent    = metricsEndpoint{name: "cilium-agent", ns: nsCilium, selector: LabelCiliumAgent, port: PortCiliumAgent, expected: SeedAllowlist["cilium-agent"], prefix: "cilium_"}
	endpointOperator = metricsEndpoint{name: "cilium-operator", ns: nsCilium, selector: LabelCiliumOperator, port: PortCiliumOperator, prefix: "cilium_operator_"}
	endpointEnvoy    = metricsEndpoint{name: "cilium-envoy", ns: nsCilium, selector: LabelCiliumEnvoy, port: PortEnvoy, prefix: "envoy_"}
	endpointHubble   = metricsEndpoint{name: "hubble", ns: nsCilium, selector: LabelCiliumAgent, port: PortHubbleMetrics, expected: SeedAllowlist["hubble"], prefix: "hubble_"}
	endpointTetragon = metricsEndpoint{name: "tetragon", ns: nsTetragon, selector: LabelTetragon, port: PortTetragon, expected: SeedAllowlist["tetragon"], prefix: "tetragon_"}
)

// maxMetricsPods bounds how many pods of one endpoint are scraped per run
// (a 1000-node cluster must not mean 1000 agent scrapes).
const maxMetricsPods = 16

// scrapeResult is one pod's answer.
type scrapeResult struct {
	pod     *corev1.Pod
	names   map[string]bool
	err     error
	samples int
}

func metricsCheck(ep metricsEndpoint) func(context.Context, *env) Result {
	return func(ctx context.Context, e *env) Result { return e.checkMetrics(ctx, ep) }
}

func (e *env) checkMetrics(ctx context.Context, ep metricsEndpoint) Result {
	ns := ep.ns(e)
	pods, err := e.pods(ctx, ns, ep.selector)
	if err != nil {
		return apiErr("listing pods", err)
	}
	var targets []*corev1.Pod
	for i := range pods {
		if pods[i].Status.PodIP != "" && pods[i].Status.Phase == corev1.PodRunning {
			targets = append(targets, &pods[i])
		}
	}
	if len(targets) == 0 {
		return Result{Status: StatusFail, Detail: fmt.Sprintf("no running pod labelled %s in %s to scrape", ep.selector, ns),
			Next: fmt.Sprintf("kubectl -n %s get pods -l %s -o wide", ns, ep.selector)}
	}
	sampled := ""
	if len(targets) > maxMetricsPods {
		sampled = fmt.Sprintf(" (sampled %d of %d pods)", maxMetricsPods, len(targets))
		targets = targets[:maxMetricsPods]
	}
	scheme := ""
	if ep.port == PortHubbleMetrics {
		if cfg, _ := e.ciliumConfig(ctx); cfg["hubble-metrics-server-enable-tls"] == "true" {
			scheme = "https:"
		}
	}
	results := make([]scrapeResult, len(targets))
	var wg sync.WaitGroup
	for i, p := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			names, n, err := e.scrapeNames(ctx, p, scheme, ep.port)
			results[i] = scrapeResult{pod: p, names: names, err: err, samples: n}
		}()
	}
	wg.Wait()

	edition := e.edition(ctx)
	var failed, missingHard, missingSoft, missingEnterprise []string
	answered := 0
	for _, r := range results {
		where := r.pod.Spec.NodeName + " " + r.pod.Name
		if r.err != nil {
			failed = append(failed, where+": "+r.err.Error())
			continue
		}
		answered++
		var hard, soft, ent []string
		for _, name := range ep.expected {
			if r.names[name] {
				continue
			}
			switch {
			case ep.name == "tetragon" && edition != "enterprise" && tetragonEnterpriseOnly(name):
				ent = append(ent, name)
			case trafficDependent(name):
				soft = append(soft, name)
			default:
				hard = append(hard, name)
			}
		}
		if ep.prefix != "" && !hasPrefix(r.names, ep.prefix) {
			hard = append(hard, ep.prefix+"* (no such metric at all)")
		}
		if len(hard) > 0 {
			missingHard = append(missingHard, where+": missing "+strings.Join(hard, ", "))
		}
		if len(soft) > 0 {
			missingSoft = append(missingSoft, where+": no samples yet for "+strings.Join(soft, ", "))
		}
		if len(ent) > 0 && len(missingEnterprise) == 0 {
			missingEnterprise = append(missingEnterprise, fmt.Sprintf("%d network-observability names (tetragon_socket_stats_*, tetragon_network_*, ...) are Isovalent Enterprise Tetragon metrics", len(ent)))
		}
	}
	path := fmt.Sprintf("/api/v1/namespaces/%s/pods/%sPOD:%d/proxy/metrics", ns, scheme, ep.port)
	detail := fmt.Sprintf("%d/%d pods answer%s", answered, len(targets), sampled)
	if len(ep.expected) > 0 {
		detail += fmt.Sprintf("; allowlist names: %d expected", len(ep.expected))
	}
	items := append(append(append(append([]string(nil), failed...), missingHard...), missingSoft...), missingEnterprise...)
	first := func(lines []string) string { return strings.TrimSuffix(strings.Fields(lines[0])[1], ":") }
	switch {
	case len(failed) > 0:
		return Result{Status: StatusFail, Detail: fmt.Sprintf("%d/%d pods do not answer on :%d%s", len(failed), len(targets), ep.port, sampled), Items: items,
			Next: fmt.Sprintf("kubectl get --raw %s  # then: kubectl -n %s logs %s", strings.Replace(path, "POD", first(failed), 1), ns, first(failed))}
	case len(missingHard) > 0:
		return Result{Status: StatusFail, Detail: detail + "; some names the pipeline filters on are missing", Items: items,
			Next: fmt.Sprintf("kubectl get --raw %s | grep -v '^#' | cut -d'{' -f1 | sort -u  # metric disabled? check prometheus.metrics in the chart values", strings.Replace(path, "POD", first(missingHard), 1))}
	case len(missingSoft) > 0:
		next := "kubectl isoobs verify --component l7  # DNS/HTTP series need an L7 policy selecting the pods"
		return Result{Status: StatusWarn, Detail: detail + "; some traffic-dependent names have no samples yet", Items: items, Next: next}
	case len(missingEnterprise) > 0:
		// OSS is a deliberate install choice: say what it costs, do not warn.
		return Result{Status: StatusOK, Detail: detail + "; OSS Tetragon serves tetragon_events_total, the allowlist's network metrics need Isovalent Enterprise Tetragon", Items: items}
	}
	return Result{Status: StatusOK, Detail: detail + ", all served"}
}

func hasPrefix(names map[string]bool, prefix string) bool {
	for n := range names {
		if strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}

// scrapeNames fetches a pod's /metrics through the API server's pod proxy
// and returns the sample names it serves.
func (e *env) scrapeNames(ctx context.Context, pod *corev1.Pod, scheme string, port int) (map[string]bool, int, error) {
	body, err := e.proxyGet(ctx, pod, scheme, port, "metrics")
	if err != nil {
		return nil, 0, err
	}
	defer body.Close()
	return sampleNames(io.LimitReader(body, 256<<20))
}

// sampleNames lists the metric names of samples in a Prometheus text or
// OpenMetrics exposition. Names are read from sample lines (not # TYPE), so
// counters show as *_total and histograms as *_bucket/_sum/_count in both
// formats, which is how the collector's allowlist names them.
func sampleNames(r io.Reader) (map[string]bool, int, error) {
	names := map[string]bool{}
	n, err := scanSamples(r, func(name string, _ []byte) { names[name] = true })
	return names, n, err
}

// sumSamples adds up the values of every series of the given names.
func sumSamples(r io.Reader, want ...string) (map[string]float64, error) {
	sums := map[string]float64{}
	_, err := scanSamples(r, func(name string, rest []byte) {
		if !slices.Contains(want, name) {
			return
		}
		// rest is "{labels} value [timestamp]" or " value [timestamp]".
		if i := bytes.LastIndexByte(rest, '}'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(string(rest))
		if len(f) == 0 {
			return
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sums[name] += v
		}
	})
	return sums, err
}

func scanSamples(r io.Reader, sample func(name string, rest []byte)) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	samples := 0
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		end := len(line)
		for i, c := range line {
			if c == '{' || c == ' ' || c == '\t' {
				end = i
				break
			}
		}
		sample(string(line[:end]), line[end:])
		samples++
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("reading metrics: %w", err)
	}
	if samples == 0 {
		return 0, fmt.Errorf("answered, but with no samples")
	}
	return samples, nil
}

// proxyGet fetches path from a pod's port through the API server's pod
// proxy (/api/v1/namespaces/NS/pods/[https:]POD:PORT/proxy/PATH).
func (e *env) proxyGet(ctx context.Context, pod *corev1.Pod, scheme string, port int, path string) (io.ReadCloser, error) {
	body, err := e.Client.CoreV1().RESTClient().Get().
		Namespace(pod.Namespace).Resource("pods").Name(fmt.Sprintf("%s%s:%d", scheme, pod.Name, port)).
		SubResource("proxy").Suffix(path).Stream(ctx)
	if err != nil {
		return nil, shortProxyError(err)
	}
	return body, nil
}

// shortProxyError trims the API server's proxy error to its cause.
func shortProxyError(err error) error {
	s := err.Error()
	if i := strings.LastIndex(s, "dial tcp"); i >= 0 {
		s = s[i:]
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return fmt.Errorf("%s", s)
}

// sortedKeys is for stable output.
func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return slices.Clip(keys)
}
