package verify

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/isoobs/isoobs/install/values"
)

// configExpectation is one cilium-config key as `kubectl isoobs install`
// sets it. severity is what a difference costs.
type configExpectation struct {
	key      string
	want     string
	severity Status
	why      string
}

// expectedCiliumConfig is the cilium-config `kubectl isoobs install` would
// produce for an edition (its default options: redaction on, file export
// on). It is kept in this one function so it can be replaced by rendering
// install's values once that package lands.
func expectedCiliumConfig(edition string) (keys []configExpectation, hubbleMetrics []string) {
	// What install sets: seed 001's set; flow_export only where the enterprise agent knows it.
	metrics := values.HubbleMetricsOSS
	if edition == "enterprise" {
		metrics = values.HubbleMetricsEnterprise
	}
	return []configExpectation{
		{"enable-hubble", "true", StatusFail, "Hubble is off: no flows, no hubble metrics, no relay data"},
		{"hubble-metrics-server", ":9965", StatusFail, "the hubble metrics endpoint the pipeline scrapes"},
		{"enable-hubble-open-metrics", "true", StatusWarn, "OpenMetrics (exemplars) as seed 001 sets it"},
		{"hubble-listen-address", ":4244", StatusFail, "Relay reaches each node's Hubble server here"},
		{"prometheus-serve-addr", ":9962", StatusFail, "the agent metrics endpoint the pipeline scrapes"},
		{"operator-prometheus-serve-addr", ":9963", StatusWarn, "the operator metrics endpoint"},
		{"hubble-redact-enabled", "true", StatusWarn, "L7 redaction (seed 003)"},
		{"hubble-redact-http-urlquery", "true", StatusWarn, "URL query strings stay out of flows"},
		{"hubble-redact-http-userinfo", "true", StatusWarn, "user:password@ stays out of flows"},
		{"hubble-redact-http-headers-deny", "Authorization Proxy-Authorization Cookie Set-Cookie", StatusWarn, "credentials headers stay out of flows"},
		{"hubble-export-file-path", "/var/run/cilium/hubble/events.log", StatusWarn, "the Hubble flow exporter (seed 003)"},
	}, metrics
}

// metricName is the part of a hubble-metrics entry before its options.
func metricName(entry string) string {
	name, _, _ := strings.Cut(entry, ":")
	return name
}

func checkCiliumConfig(ctx context.Context, e *env) Result {
	cfg, err := e.ciliumConfig(ctx)
	if err != nil {
		return apiErr("reading cilium-config", err)
	}
	ns := e.Namespaces.Cilium
	if cfg == nil {
		return Result{Status: StatusFail, Detail: "no ConfigMap cilium-config in " + ns + ": Cilium is not installed there",
			Next: "kubectl get cm -A | grep cilium-config; else: kubectl isoobs install"}
	}
	edition := e.edition(ctx)
	keys, wantMetrics := expectedCiliumConfig(edition)
	worst := StatusOK
	var diff []string
	raise := func(s Status) {
		if s.severity() > worst.severity() {
			worst = s
		}
	}
	for _, k := range keys {
		have, ok := cfg[k.key]
		if ok && strings.Join(strings.Fields(have), " ") == k.want {
			continue
		}
		raise(k.severity)
		if !ok {
			diff = append(diff, fmt.Sprintf("- %s: unset, want %q (%s)", k.key, k.want, k.why))
		} else {
			diff = append(diff, fmt.Sprintf("~ %s: %q, want %q (%s)", k.key, have, k.want, k.why))
		}
	}
	haveMetrics := strings.Fields(cfg["hubble-metrics"])
	haveByName := map[string]string{}
	for _, m := range haveMetrics {
		haveByName[metricName(m)] = m
	}
	var missingNames []string
	for _, want := range wantMetrics {
		have, ok := haveByName[metricName(want)]
		switch {
		case !ok:
			raise(StatusFail)
			missingNames = append(missingNames, metricName(want))
			diff = append(diff, fmt.Sprintf("- hubble-metrics: %s missing", want))
		case have != want:
			raise(StatusWarn)
			diff = append(diff, fmt.Sprintf("~ hubble-metrics: %s, want %s", have, want))
		}
	}
	for _, have := range haveMetrics {
		if !slices.ContainsFunc(wantMetrics, func(w string) bool { return metricName(w) == metricName(have) }) {
			diff = append(diff, fmt.Sprintf("+ hubble-metrics: %s (not in seed 001's set; kept)", have))
		}
	}
	summary := fmt.Sprintf("%s edition; enable-hubble=%s, hubble-metrics: %d/%d of seed 001's set, hubble-metrics-server=%q, redact=%s, export=%q",
		edition, orUnset(cfg["enable-hubble"]), len(wantMetrics)-len(missingNames), len(wantMetrics), cfg["hubble-metrics-server"],
		orUnset(cfg["hubble-redact-enabled"]), cfg["hubble-export-file-path"])
	res := Result{Status: worst, Detail: summary, Items: diff}
	switch {
	case slices.Contains(missingNames, "dns"):
		res.Detail = "hubble-metrics lacks dns: hubble_dns_* stay empty (kubectl isoobs top dns still works from eBPF); " + summary
		res.Next = hubbleMetricsFix(ns, missingNames)
	case len(missingNames) > 0:
		res.Detail = "hubble-metrics lacks " + strings.Join(missingNames, ", ") + "; " + summary
		res.Next = hubbleMetricsFix(ns, missingNames)
	case worst != StatusOK:
		res.Next = "kubectl isoobs install  # re-applies these settings; or: kubectl -n " + ns + " edit cm cilium-config && kubectl -n " + ns + " rollout restart ds/cilium"
	}
	return res
}

func hubbleMetricsFix(ns string, missing []string) string {
	return fmt.Sprintf("kubectl isoobs install  # re-applies seed 001's hubble.metrics.enabled (adds %s); then: kubectl -n %s rollout restart ds/cilium",
		strings.Join(missing, ", "), ns)
}

func orUnset(s string) string {
	if s == "" {
		return "unset"
	}
	return s
}
