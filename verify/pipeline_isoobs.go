package verify

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/isoobs/isoobs/install/values"
)

// collectorIsoobs checks that an OpenTelemetry collector configuration also takes the isoobs
// daemons' metrics the way it takes the seed's components: a prometheus receiver on the daemons'
// port wired into service.pipelines.metrics, and a filter of that pipeline letting the isoobs
// allowlist through (values.IsoobsMetricAllowlist, strict). Only where isoobs daemons run. It
// returns the items to report and whether something is missing.
func (e *env) collectorIsoobs(ctx context.Context, raw string) (items []string, missing bool, err error) {
	pods, err := e.pods(ctx, "", LabelIsoobsDaemon)
	if err != nil || len(pods) == 0 {
		return nil, false, err
	}
	var cfg struct {
		Receivers  map[string]any `json:"receivers"`
		Processors map[string]struct {
			Metrics struct {
				Include struct {
					MetricNames []string `json:"metric_names"`
				} `json:"include"`
			} `json:"metrics"`
		} `json:"processors"`
		Service struct {
			Pipelines map[string]struct {
				Receivers  []string `json:"receivers"`
				Processors []string `json:"processors"`
			} `json:"pipelines"`
		} `json:"service"`
	}
	if err := yaml.Unmarshal([]byte(raw), &cfg); err != nil {
		return nil, false, nil // checkCollector reports an unreadable config
	}
	pipeline := cfg.Service.Pipelines["metrics"]
	receiver := ""
	for name, r := range cfg.Receivers {
		b, _ := yaml.Marshal(r)
		if strings.HasPrefix(name, "prometheus") && strings.Contains(string(b), ":"+strconv.Itoa(PortIsoobs)) {
			receiver = name
			break
		}
	}
	where := fmt.Sprintf("isoobs :%d", PortIsoobs)
	switch {
	case receiver == "":
		return []string{where + ": no prometheus receiver"}, true, nil
	case !slices.Contains(pipeline.Receivers, receiver):
		return []string{fmt.Sprintf("%s: receiver %s not in service.pipelines.metrics", where, receiver)}, true, nil
	}
	var allowed []string
	for _, p := range pipeline.Processors {
		if strings.HasPrefix(p, "filter") {
			allowed = append(allowed, cfg.Processors[p].Metrics.Include.MetricNames...)
		}
	}
	var dropped []string
	for _, n := range values.IsoobsMetricAllowlist {
		if !slices.Contains(allowed, n) {
			dropped = append(dropped, n)
		}
	}
	if len(dropped) > 0 {
		return []string{fmt.Sprintf("%s: %s, but the metrics pipeline's filter drops %s", where, receiver, strings.Join(dropped, ", "))}, true, nil
	}
	return []string{fmt.Sprintf("%s: %s (%d isoobs metrics allowed)", where, receiver, len(values.IsoobsMetricAllowlist))}, false, nil
}
