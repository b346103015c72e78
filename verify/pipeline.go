package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/isoobs/isoobs/k8s"
)

// componentPorts are the scrape ports the pipeline must cover (seed 000).
type componentPort struct {
	name string
	port int
}

var componentPorts = []componentPort{
	{"cilium-agent", PortCiliumAgent}, {"cilium-operator", PortCiliumOperator}, {"cilium-envoy", PortEnvoy},
	{"hubble", PortHubbleMetrics}, {"tetragon", PortTetragon},
}

// Prometheus is found by the labels of Cilium's example monitoring stack
// (app=prometheus) and of the prometheus-community charts.
var prometheusSelectors = []string{"app=prometheus", "app.kubernetes.io/name=prometheus"}

// The Splunk OpenTelemetry Collector chart's agent ConfigMap carries the
// collector configuration under this key.
const otelConfigKey = "relay"

func checkPipeline(ctx context.Context, e *env) Result {
	for _, sel := range prometheusSelectors {
		pods, err := e.pods(ctx, "", sel)
		if err != nil {
			return apiErr("listing pods", err)
		}
		for i := range pods {
			if k8s.PodReady(&pods[i]) {
				return e.checkPrometheus(ctx, &pods[i])
			}
		}
		if len(pods) > 0 {
			p := &pods[0]
			return Result{Status: StatusFail, Detail: fmt.Sprintf("Prometheus pod %s/%s is %s", p.Namespace, p.Name, podState(p)),
				Next: fmt.Sprintf("kubectl -n %s describe pod %s", p.Namespace, p.Name)}
		}
	}
	cms, err := e.Client.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{LabelSelector: "app=splunk-otel-collector"})
	if err != nil {
		return apiErr("listing ConfigMaps", err)
	}
	for i := range cms.Items {
		if cfg, ok := cms.Items[i].Data[otelConfigKey]; ok {
			return e.checkCollector(ctx, &cms.Items[i], cfg)
		}
	}
	return Result{Status: StatusWarn, Detail: "no metrics pipeline found: no Prometheus pod (app=prometheus) and no Splunk OpenTelemetry Collector config (app=splunk-otel-collector)",
		Next: "kubectl isoobs install --pipeline prometheus  # or --pipeline splunk"}
}

// promTargets is the part of Prometheus' /api/v1/targets answer read here.
type promTargets struct {
	Status string `json:"status"`
	Data   struct {
		ActiveTargets []struct {
			ScrapePool string            `json:"scrapePool"`
			ScrapeURL  string            `json:"scrapeUrl"`
			Health     string            `json:"health"`
			LastError  string            `json:"lastError"`
			Labels     map[string]string `json:"labels"`
		} `json:"activeTargets"`
	} `json:"data"`
}

func promPort(p *corev1.Pod) int {
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == "web" || port.Name == "http" || port.ContainerPort == 9090 {
				return int(port.ContainerPort)
			}
		}
	}
	return 9090
}

// checkPrometheus reads Prometheus' targets through the pod proxy: every
// component port must have targets, all up.
func (e *env) checkPrometheus(ctx context.Context, p *corev1.Pod) Result {
	port := promPort(p)
	body, err := e.proxyGet(ctx, p, "", port, "api/v1/targets")
	where := fmt.Sprintf("Prometheus %s/%s", p.Namespace, p.Name)
	if err != nil {
		return Result{Status: StatusFail, Detail: where + " does not answer /api/v1/targets: " + err.Error(),
			Next: fmt.Sprintf("kubectl -n %s logs %s", p.Namespace, p.Name)}
	}
	defer body.Close()
	var t promTargets
	if err := json.NewDecoder(io.LimitReader(body, 64<<20)).Decode(&t); err != nil || t.Status != "success" {
		return Result{Status: StatusFail, Detail: fmt.Sprintf("%s: unreadable /api/v1/targets answer (%v)", where, err),
			Next: fmt.Sprintf("kubectl get --raw /api/v1/namespaces/%s/pods/%s:%d/proxy/api/v1/targets", p.Namespace, p.Name, port)}
	}
	type tally struct{ up, total int }
	byPort := map[int]*tally{}
	var down []string
	for _, tg := range t.Data.ActiveTargets {
		u, err := url.Parse(tg.ScrapeURL)
		if err != nil {
			continue
		}
		port, _ := strconv.Atoi(u.Port())
		tl := byPort[port]
		if tl == nil {
			tl = &tally{}
			byPort[port] = tl
		}
		tl.total++
		if tg.Health == "up" {
			tl.up++
		} else if slices.ContainsFunc(componentPorts, func(c componentPort) bool { return c.port == port }) {
			down = append(down, fmt.Sprintf("%s %s: %s %s", tg.ScrapePool, tg.ScrapeURL, tg.Health, tg.LastError))
		}
	}
	var items, missing []string
	upTotal, total := 0, 0
	for _, c := range componentPorts {
		tl := byPort[c.port]
		if tl == nil {
			missing = append(missing, fmt.Sprintf("%s :%d", c.name, c.port))
			items = append(items, fmt.Sprintf("%s :%d: no target", c.name, c.port))
			continue
		}
		upTotal += tl.up
		total += tl.total
		items = append(items, fmt.Sprintf("%s :%d: %d/%d up", c.name, c.port, tl.up, tl.total))
	}
	sort.Strings(down)
	items = append(items, down...)
	detail := fmt.Sprintf("%s: %d/%d component targets up", where, upTotal, total)
	next := fmt.Sprintf("kubectl -n %s port-forward %s %d & open http://127.0.0.1:%d/targets", p.Namespace, p.Name, port, port)
	switch {
	case len(down) > 0:
		return Result{Status: StatusFail, Detail: detail + fmt.Sprintf("; %d down", len(down)), Items: items, Next: next}
	case len(missing) == len(componentPorts):
		return Result{Status: StatusFail, Detail: where + " scrapes none of the stack's ports", Items: items, Next: next}
	case len(missing) > 0:
		return Result{Status: StatusWarn, Detail: detail + "; not scraped: " + strings.Join(missing, ", "), Items: items, Next: next}
	}
	return Result{Status: StatusOK, Detail: detail, Items: items}
}

// checkCollector reads the OpenTelemetry collector's configuration: one
// prometheus receiver per component port, each wired into the metrics
// pipeline, and collector pods ready.
func (e *env) checkCollector(ctx context.Context, cm *corev1.ConfigMap, raw string) Result {
	where := fmt.Sprintf("OpenTelemetry collector config %s/%s", cm.Namespace, cm.Name)
	var cfg struct {
		Receivers map[string]any `json:"receivers"`
		Service   struct {
			Pipelines map[string]struct {
				Receivers []string `json:"receivers"`
			} `json:"pipelines"`
		} `json:"service"`
	}
	if err := yaml.Unmarshal([]byte(raw), &cfg); err != nil {
		return Result{Status: StatusFail, Detail: where + ": unreadable: " + err.Error(), Next: fmt.Sprintf("kubectl -n %s get cm %s -o yaml", cm.Namespace, cm.Name)}
	}
	wired := cfg.Service.Pipelines["metrics"].Receivers
	var items, missing []string
	for _, c := range componentPorts {
		receiver := ""
		for name, r := range cfg.Receivers {
			if !strings.HasPrefix(name, "prometheus") {
				continue
			}
			b, _ := yaml.Marshal(r)
			// The operator's job keeps the pod's declared metrics port (seed 000 rewrites no
			// address for it): its receiver is the one selecting the operator's pods.
			if strings.Contains(string(b), ":"+strconv.Itoa(c.port)) ||
				(c.port == PortCiliumOperator && strings.Contains(string(b), "__meta_kubernetes_pod_label_io_cilium_app")) {
				receiver = name
				break
			}
		}
		switch {
		case receiver == "":
			missing = append(missing, fmt.Sprintf("%s :%d", c.name, c.port))
			items = append(items, fmt.Sprintf("%s :%d: no prometheus receiver", c.name, c.port))
		case !slices.Contains(wired, receiver):
			missing = append(missing, fmt.Sprintf("%s :%d", c.name, c.port))
			items = append(items, fmt.Sprintf("%s :%d: receiver %s not in service.pipelines.metrics", c.name, c.port, receiver))
		default:
			items = append(items, fmt.Sprintf("%s :%d: %s", c.name, c.port, receiver))
		}
	}
	isoobsItems, isoobsMissing, err := e.collectorIsoobs(ctx, raw)
	if err != nil {
		return apiErr("listing isoobs daemon pods", err)
	}
	items = append(items, isoobsItems...)
	pods, err := e.pods(ctx, cm.Namespace, "app=splunk-otel-collector")
	if err != nil {
		return apiErr("listing collector pods", err)
	}
	ready := 0
	for i := range pods {
		if k8s.PodReady(&pods[i]) {
			ready++
		}
	}
	detail := fmt.Sprintf("%s: %d/%d receivers wired, collector pods %d/%d ready", where, len(componentPorts)-len(missing), len(componentPorts), ready, len(pods))
	switch {
	case ready == 0:
		return Result{Status: StatusFail, Detail: detail, Items: items, Next: fmt.Sprintf("kubectl -n %s get pods -l app=splunk-otel-collector", cm.Namespace)}
	case len(missing) > 0:
		return Result{Status: StatusFail, Detail: detail, Items: items, Next: "kubectl isoobs install --pipeline splunk  # re-applies one receiver per port"}
	case ready < len(pods):
		return Result{Status: StatusWarn, Detail: detail, Items: items, Next: fmt.Sprintf("kubectl -n %s get pods -l app=splunk-otel-collector", cm.Namespace)}
	case isoobsMissing:
		return Result{Status: StatusWarn, Detail: detail + "; the isoobs daemons' metrics are not collected", Items: items,
			Next: "kubectl isoobs install --pipeline splunk  # adds the isoobs receiver and its allowlist"}
	}
	return Result{Status: StatusOK, Detail: detail, Items: items}
}
