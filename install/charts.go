package install

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/cli"

	"github.com/isoobs/isoobs/deploy"
	"github.com/isoobs/isoobs/deploy/alerts"
	"github.com/isoobs/isoobs/deploy/dashboards"
)

// Source overrides where a component's chart comes from.
type Source struct {
	Dir     string // --chart-dir: an unpacked chart or a .tgz (air-gapped)
	Repo    string // --repo: a mirror of the chart repository
	Version string // --version: a pin other than the tested default
}

// ErrRepoUnreachable marks a chart repository that could not be read.
var ErrRepoUnreachable = errors.New("chart repository unreachable")

// LoadChart loads a component's chart: from src.Dir, the embedded isoobs
// chart, or the repository (src.Repo or the spec's).
func LoadChart(ctx context.Context, spec Spec, src Source) (*chart.Chart, error) {
	version := spec.Version
	if src.Version != "" {
		version = src.Version
	}
	var ch *chart.Chart
	var err error
	switch {
	case src.Dir != "":
		ch, err = loader.Load(src.Dir)
		if err != nil {
			return nil, fmt.Errorf("%s: loading the chart at --chart-dir %s=%s: %w", spec.Component, spec.Component, src.Dir, err)
		}
		if ch.Name() != spec.Chart {
			return nil, fmt.Errorf("%s: --chart-dir %s holds chart %q, not %q: point it at the %s chart", spec.Component, src.Dir, ch.Name(), spec.Chart, spec.Chart)
		}
		if src.Version != "" && ch.Metadata.Version != src.Version {
			return nil, fmt.Errorf("%s: --version %s asks for %s but --chart-dir %s holds %s %s", spec.Component, src.Version, src.Version, src.Dir, spec.Chart, ch.Metadata.Version)
		}
	case spec.Component == ComponentIsoobs && src.Repo == "":
		ch, err = deploy.Chart()
		if err != nil {
			return nil, err
		}
	default:
		ch, err = pullChart(ctx, spec, src.Repo, version)
		if err != nil {
			return nil, err
		}
	}
	if spec.Component == ComponentIsoobs {
		addAlertRules(ch)
	}
	return ch, nil
}

// pullChart downloads a chart from its repository into a throw-away Helm cache.
func pullChart(ctx context.Context, spec Spec, repoURL, version string) (*chart.Chart, error) {
	if repoURL == "" {
		repoURL = spec.Repo
	}
	if repoURL == "" {
		return nil, fmt.Errorf("%s: no chart repository publishes this chart: %s", spec.Component, spec.Hint)
	}
	tmp, err := os.MkdirTemp("", "isoobs-helm-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	settings := cli.New()
	settings.RepositoryCache = path.Join(tmp, "cache")
	settings.RepositoryConfig = path.Join(tmp, "repositories.yaml")
	settings.RegistryConfig = path.Join(tmp, "registry.json")
	cpo := action.ChartPathOptions{RepoURL: repoURL, Version: version}
	done := make(chan struct{})
	var chartPath string
	go func() {
		defer close(done)
		chartPath, err = cpo.LocateChart(spec.Chart, settings)
	}()
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: fetching chart %s from %s: %w", spec.Component, spec.Chart, repoURL, ctx.Err())
	case <-done:
	}
	if err != nil {
		return nil, fmt.Errorf("%s: cannot fetch chart %s %s from repository %s (%w: %v). For air-gapped clusters or hosts without access, pass --chart-dir %s=DIR with the unpacked chart (%s), or --repo %s=URL for a reachable mirror",
			spec.Component, spec.Chart, orLatest(version), repoURL, ErrRepoUnreachable, err, spec.Component, spec.Hint, spec.Component)
	}
	ch, err := loader.Load(chartPath)
	if err != nil {
		return nil, fmt.Errorf("%s: loading chart downloaded from %s: %w", spec.Component, repoURL, err)
	}
	return ch, nil
}

func orLatest(v string) string {
	if v == "" {
		return "(latest)"
	}
	return v
}

// ChartDigest fingerprints a chart's metadata, templates, default values,
// schema and files, so a rebuilt embedded chart with an unchanged version
// number still counts as a change.
func ChartDigest(ch *chart.Chart) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", ch.Metadata.Name, ch.Metadata.Version)
	files := append(append([]*chart.File(nil), ch.Templates...), ch.Files...)
	for _, f := range ch.Raw {
		if f.Name == "values.yaml" || f.Name == "values.schema.json" {
			files = append(files, f)
		}
	}
	slices.SortFunc(files, func(a, b *chart.File) int { return strings.Compare(a.Name, b.Name) })
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%d\x00", f.Name, len(f.Data))
		h.Write(f.Data)
	}
	for _, dep := range ch.Dependencies() {
		h.Write([]byte(ChartDigest(dep)))
	}
	return hex.EncodeToString(h.Sum(nil))[:40]
}

// MonitoringDashboards are the Grafana dashboards of the prometheus pipeline
// (seeds 002/003: Cilium, Hubble, Operator, L7 HTTP), taken from the Cilium
// chart's files.
var MonitoringDashboards = []string{
	"files/cilium-agent/dashboards/cilium-dashboard.json",
	"files/cilium-operator/dashboards/cilium-operator-dashboard.json",
	"files/hubble/dashboards/hubble-dashboard.json",
	"files/hubble/dashboards/hubble-dns-namespace.json",
	"files/hubble/dashboards/hubble-l7-http-metrics-by-workload.json",
	"files/hubble/dashboards/hubble-network-overview-namespace.json",
}

// PrepareMonitoringChart adapts Cilium's example Prometheus + Grafana chart:
// its prometheus.yaml is replaced with the generated scrape config, the
// dashboards are copied in from the Cilium chart (the example chart's
// grafana-dashboards directory is a symlink that Go module zips drop), and
// isoobs' dashboards and alerting rules are added.
func PrepareMonitoringChart(monitoring, cilium *chart.Chart, promConfig []byte) error {
	var kept []*chart.File
	for _, f := range monitoring.Files {
		if f.Name == "files/prometheus/prometheus.yaml" || strings.HasPrefix(f.Name, "files/grafana-dashboards/") {
			continue
		}
		kept = append(kept, f)
	}
	kept = append(kept, &chart.File{Name: "files/prometheus/prometheus.yaml", Data: promConfig})
	if cilium == nil {
		return errors.New("the prometheus pipeline's Grafana dashboards come from the Cilium chart: include cilium in --components or give --chart-dir cilium=DIR")
	}
	var missing []string
	for _, name := range MonitoringDashboards {
		i := slices.IndexFunc(cilium.Files, func(f *chart.File) bool { return f.Name == name })
		if i < 0 {
			missing = append(missing, name)
			continue
		}
		kept = append(kept, &chart.File{Name: "files/grafana-dashboards/" + path.Base(name), Data: cilium.Files[i].Data})
	}
	if len(missing) > 0 {
		return fmt.Errorf("the Cilium chart %s lacks the dashboards %s", cilium.Metadata.Version, strings.Join(missing, ", "))
	}
	// isoobs' own dashboards (deploy/dashboards) and alerting rules (deploy/alerts; prometheus.yaml
	// names the file as values.PrometheusRulesFile).
	names, data := dashboards.Files()
	for _, name := range names {
		kept = append(kept, &chart.File{Name: "files/grafana-dashboards/" + name, Data: data[name]})
	}
	kept = append(kept, &chart.File{Name: "files/prometheus/" + alerts.FileName, Data: alerts.Rules()})
	monitoring.Files = kept
	return nil
}
