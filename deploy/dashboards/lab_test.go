//go:build linux

package dashboards_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"

	"github.com/isoobs/isoobs/deploy/alerts"
	"github.com/isoobs/isoobs/deploy/dashboards"
	"github.com/isoobs/isoobs/deploy/internal/promtools"
	"github.com/isoobs/isoobs/install/values"
	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/dnsgen"
	"github.com/isoobs/isoobs/testlab/labdaemons"
	"github.com/isoobs/isoobs/testlab/needroot"
	"github.com/isoobs/isoobs/testlab/scenario"
)

// scrape is what Prometheus would store from the daemons: per series name (histograms as
// _bucket/_sum/_count), the label names and the values seen.
type scrape map[string]map[string]map[string]bool

func (s scrape) add(name string, labels map[string]string) {
	if s[name] == nil {
		s[name] = map[string]map[string]bool{}
	}
	for k, v := range labels {
		if s[name][k] == nil {
			s[name][k] = map[string]bool{}
		}
		s[name][k][v] = true
	}
}

func (s scrape) addFamilies(fams map[string]*dto.MetricFamily) (series int) {
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			ls := map[string]string{}
			for _, l := range m.GetLabel() {
				ls[l.GetName()] = l.GetValue()
			}
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				s.add(name+"_sum", ls)
				s.add(name+"_count", ls)
				withLE := map[string]string{"le": "+Inf"}
				for k, v := range ls {
					withLE[k] = v
				}
				s.add(name+"_bucket", withLE)
				series += 3 + len(m.GetHistogram().GetBucket())
			default:
				s.add(name, ls)
				series++
			}
		}
	}
	return series
}

// targetLabels are the labels the prometheus pipeline's scrape job for the daemons adds to every
// series (relabel target_label, plus job and instance), read from the generated config.
func targetLabels(t *testing.T) []string {
	t.Helper()
	cfg, err := values.PrometheusConfig(values.Defaults())
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		ScrapeConfigs []struct {
			JobName        string `json:"job_name"`
			RelabelConfigs []struct {
				TargetLabel string `json:"target_label"`
			} `json:"relabel_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal(cfg, &doc); err != nil {
		t.Fatal(err)
	}
	out := []string{"job", "instance"}
	for _, j := range doc.ScrapeConfigs {
		if j.JobName != "isoobs" {
			continue
		}
		for _, r := range j.RelabelConfigs {
			if r.TargetLabel != "" && !strings.HasPrefix(r.TargetLabel, "__") {
				out = append(out, r.TargetLabel)
			}
		}
		return out
	}
	t.Fatal("the prometheus pipeline has no isoobs job")
	return nil
}

var literalAlternation = regexp.MustCompile(`^[A-Za-z0-9_./-]+(\|[A-Za-z0-9_./-]+)*$`)

// TestDashboardsAndAlertsMatchARealScrape runs the daemons on a lab (real kernel probes, the
// real chart installed, the seed-000 app), floods DNS with random subdomains from the crawler,
// scrapes every daemon's /metrics and checks every dashboard query and every rule against that
// scrape: each metric is one the daemons export (or `up`, which Prometheus makes per target),
// each label matched or grouped by is on that metric or added by the pipeline's scrape job,
// and each label value matched literally (rcode="NXDOMAIN", reason=~"pod_map_full|...") occurs.
// DNS over TCP gives the TCP probe's series too. The scrape itself carries no pod name, pod UID or query name, and every name of the splunk
// pipeline's isoobs allowlist is a metric family the daemons serve.
func TestDashboardsAndAlertsMatchARealScrape(t *testing.T) {
	needroot.Require(t, "the lab builds network namespaces and cgroups and the daemons load eBPF")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := t.TempDir()
	daemonBin := filepath.Join(bin, "isoobs-daemon")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", daemonBin, "github.com/isoobs/isoobs/cmd/isoobs-daemon").CombinedOutput(); err != nil {
		t.Fatalf("go build isoobs-daemon: %v\n%s", err, out)
	}
	gen, err := dnsgen.BuildBinary(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	promtools.PromQLLint(t) // built before the lab runs

	lab := testlab.StartForTest(t, testlab.Options{Nodes: []string{"dash-a", "dash-b"}})
	daemons, err := labdaemons.Start(ctx, lab, labdaemons.Options{Binary: daemonBin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(daemons.Close)
	app, err := scenario.Apply(ctx, lab)
	if err != nil {
		t.Fatal(err)
	}
	crawler := app.CrawlerPod()
	dnsServer := netip.AddrPortFrom(lab.DNSServiceIP, 53)
	// Until the daemons know the pods, their queries count as namespace "unknown": wait for the
	// crawler's namespace/workload series before the flood.
	fetch := func(port int) (string, error) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	crawlerDaemon := daemons.ByNode[crawler.API.Spec.NodeName]
	testlab.WaitFor(t, 60*time.Second, func() error {
		if _, err := dnsgen.RunInPod(ctx, crawler.Net, gen, dnsgen.Config{Server: dnsServer, Names: []string{"crawler.tenant-jobs.svc.cluster.local"}, Count: 5}); err != nil {
			return err
		}
		text, err := fetch(crawlerDaemon.MetricsPort)
		if err != nil {
			return err
		}
		if !strings.Contains(text, `isoobs_dns_queries_total{namespace="tenant-jobs",workload="`) {
			return fmt.Errorf("no tenant-jobs series yet")
		}
		return nil
	})
	// The flood (random names, NXDOMAIN) and ordinary lookups from every other pod.
	rep, err := dnsgen.RunInPod(ctx, crawler.Net, gen, dnsgen.Config{Server: dnsServer,
		RandomSuffix: "crawl.jobs-app.example", Count: 3000, QPS: 3000, Concurrency: 8, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range app.NormalPods() {
		if _, err := dnsgen.RunInPod(ctx, p.Net, gen, dnsgen.Config{Server: dnsServer, Names: scenario.ServiceNames("cluster.local"), Count: 20}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("flood: %d random names sent, %d NXDOMAIN", rep.Sent, rep.RCodes.NXDomain)
	// DNS over TCP: the TCP probe's series (isoobs / TCP dashboard) for the crawler and CoreDNS.
	if _, err := dnsgen.RunInPod(ctx, crawler.Net, gen, dnsgen.Config{Server: dnsServer, Proto: "tcp", Names: []string{"coreapi.tenant-jobs.svc.cluster.local"}, Count: 20}); err != nil {
		t.Fatal(err)
	}

	sc := scrape{}
	series := 0
	var texts []string
	families := map[string]bool{} // metric families, as the collector's prometheus receiver names them
	testlab.WaitFor(t, 30*time.Second, func() error {
		sc, series, texts, families = scrape{}, 0, nil, map[string]bool{}
		for node, d := range daemons.ByNode {
			text, err := fetch(d.MetricsPort)
			if err != nil {
				return fmt.Errorf("%s: %w", node, err)
			}
			p := expfmt.NewTextParser(model.UTF8Validation)
			fams, err := p.TextToMetricFamilies(strings.NewReader(text))
			if err != nil {
				t.Fatalf("%s: /metrics does not parse: %v", node, err)
			}
			series += sc.addFamilies(fams)
			for name := range fams {
				families[name] = true
			}
			texts = append(texts, text)
		}
		if !sc["isoobs_dns_responses_total"]["rcode"]["NXDOMAIN"] || sc["isoobs_dns_latency_seconds_bucket"] == nil ||
			!sc["isoobs_tcp_bytes_total"]["namespace"]["tenant-jobs"] {
			return fmt.Errorf("no NXDOMAIN, latency or tenant-jobs TCP series yet")
		}
		return nil
	})
	t.Logf("scraped %d series of %d names from %d daemons", series, len(sc), len(daemons.ByNode))

	// Bounded cardinality after the flood: no pod, UID or query name in any label.
	for _, text := range texts {
		if strings.Contains(text, "crawl.jobs-app.example") {
			t.Error("/metrics carries a query name")
		}
		for _, p := range app.AllPods() {
			if strings.Contains(text, string(p.API.UID)) || strings.Contains(text, `"`+p.API.Name+`"`) {
				t.Errorf("/metrics carries pod %s (name or UID)", p.API.Name)
			}
		}
	}
	if series > 600 {
		t.Errorf("%d series from %d daemons after a 3,000-name flood: not bounded", series, len(daemons.ByNode))
	}

	// The splunk pipeline's strict allowlist names only what the daemons export.
	for _, name := range values.IsoobsMetricAllowlist {
		if !families[name] {
			t.Errorf("the splunk allowlist names %s; the daemons export %v", name, keys(families))
		}
	}

	// Every expression the dashboards and rules ship.
	var exprs []expr
	names, data := dashboards.Files()
	for _, n := range names {
		d, err := dashboards.Parse(data[n])
		if err != nil {
			t.Fatal(err)
		}
		qs, err := d.Queries()
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range qs {
			exprs = append(exprs, expr{n + " " + q.Where, dashboards.ForPromQL(q.Expr), q.Label})
		}
	}
	groups, err := alerts.Groups(alerts.Rules())
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string][]string{} // recording rule -> its output labels
	var ruleExprs []expr
	for _, g := range groups {
		for _, r := range g.Rules {
			ruleExprs = append(ruleExprs, expr{alerts.FileName + " " + r.Record + r.Alert, r.Expr, ""})
		}
	}
	ruleParsed := promtools.Parse(t, func() []string {
		var s []string
		for _, e := range ruleExprs {
			s = append(s, e.expr)
		}
		return s
	}())
	i := 0
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				recorded[r.Record] = ruleParsed[i].Grouping
			}
			i++
		}
	}
	exprs = append(exprs, ruleExprs...)
	var all []string
	for _, e := range exprs {
		all = append(all, e.expr)
	}
	parsed := promtools.Parse(t, all)

	extra := targetLabels(t)
	jobs := values.PrometheusJobs()
	metrics := map[string]bool{}
	for _, problem := range checkAgainst(exprs, parsed, sc, recorded, extra, jobs, metrics) {
		t.Error(problem)
	}
	// The check can fail: a misspelt metric, a label the metric lacks, an rcode or reason the
	// daemons never export, a job the pipeline lacks.
	bad := []expr{
		{"bad metric", `rate(isoobs_dns_query_total[5m])`, ""},
		{"bad label", `sum by (pod_uid) (rate(isoobs_dns_queries_total[5m]))`, ""},
		{"bad rcode", `rate(isoobs_dns_responses_total{rcode="NXDOMIAN"}[5m])`, ""},
		{"bad reason", `increase(isoobs_lost_total{reason=~"pod_map_full|names_full"}[5m])`, ""},
		{"bad job", `up{job="isoobs-metrics"}`, ""},
		{"bad matcher", `isoobs_lost_total{map="pods"}`, ""},
	}
	badParsed := promtools.Parse(t, func() []string {
		var s []string
		for _, e := range bad {
			s = append(s, e.expr)
		}
		return s
	}())
	problems := checkAgainst(bad, badParsed, sc, recorded, extra, jobs, map[string]bool{})
	for _, b := range bad {
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.HasPrefix(p, b.where+":") }) {
			t.Errorf("the check let %q (%s) through; problems: %v", b.expr, b.where, problems)
		}
	}
	var names2 []string
	for m := range metrics {
		names2 = append(names2, m)
	}
	slices.Sort(names2)
	t.Logf("%d expressions (%d from dashboards, %d rules) checked against the scrape; metrics used: %s", len(exprs), len(exprs)-len(ruleExprs), len(ruleExprs), strings.Join(names2, " "))
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

type expr struct{ where, expr, label string }

// checkAgainst checks parsed expressions against a scrape (see the test's comment) and returns
// the problems, each starting with the expression's where; metrics collects the names used.
func checkAgainst(exprs []expr, parsed []promtools.Parsed, sc scrape, recorded map[string][]string, extra, jobs []string, metrics map[string]bool) []string {
	var problems []string
	errorf := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	for i, p := range parsed {
		where := exprs[i].where
		if p.Error != "" {
			errorf("%s: %s", where, p.Error)
			continue
		}
		// Labels this expression's metrics carry.
		var have []string
		for _, s := range p.Selectors {
			metrics[s.Metric] = true
			switch {
			case s.Metric == "up":
				have = append(have, extra...)
				for _, m := range s.Matchers {
					if m.Name == "job" && m.Type == "=" && !slices.Contains(jobs, m.Value) {
						errorf("%s: up{job=%q}: the pipeline has no such job (%v)", where, m.Value, jobs)
					}
				}
			case recorded[s.Metric] != nil:
				have = append(have, recorded[s.Metric]...)
			case sc[s.Metric] != nil:
				for l := range sc[s.Metric] {
					have = append(have, l)
				}
				have = append(have, extra...)
				for _, m := range s.Matchers {
					vals := sc[s.Metric][m.Name]
					if vals == nil && !slices.Contains(extra, m.Name) {
						errorf("%s: %s: the daemons' %s has no label %q (has %v)", where, s, s.Metric, m.Name, keys(sc[s.Metric]))
					}
					if vals == nil || (m.Type != "=" && m.Type != "=~") || m.Value == "x" || m.Value == ".*" {
						continue
					}
					want := []string{m.Value}
					if m.Type == "=~" {
						if !literalAlternation.MatchString(m.Value) {
							continue
						}
						want = strings.Split(m.Value, "|")
					}
					for _, v := range want {
						if !vals[v] {
							errorf("%s: %s: no %s=%q in the scrape (values %v)", where, s, m.Name, v, keys(vals))
						}
					}
				}
			default:
				errorf("%s: metric %s is not exported by the daemons (scraped: %v)", where, s.Metric, keys(sc))
			}
		}
		for _, s := range p.Selectors {
			for _, m := range s.Matchers {
				if !slices.Contains(have, m.Name) {
					errorf("%s: %s matches label %q, which none of its metrics carries", where, s, m.Name)
				}
			}
		}
		for _, l := range append(slices.Clone(p.Grouping), exprs[i].label) {
			if l != "" && l != "le" && !slices.Contains(have, l) {
				errorf("%s: groups by or lists label %q, which none of its metrics carries (%v)", where, l, have)
			}
		}
	}
	return problems
}
