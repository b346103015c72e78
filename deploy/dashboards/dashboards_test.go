package dashboards_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/isoobs/isoobs/deploy/dashboards"
	"github.com/isoobs/isoobs/deploy/internal/promtools"
)

// Labels a panel may group or select by: bounded ones only (never a pod UID or a query name).
var boundedLabels = []string{"cluster", "namespace", "workload", "rcode", "direction", "node", "reason", "map", "job", "le"}

func loadAll(t *testing.T) map[string]*dashboards.Dashboard {
	t.Helper()
	names, data := dashboards.Files()
	if len(names) == 0 {
		t.Fatal("no dashboards embedded")
	}
	out := map[string]*dashboards.Dashboard{}
	uids := map[string]string{}
	for _, n := range names {
		d, err := dashboards.Parse(data[n])
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if other, dup := uids[d.UID]; dup {
			t.Errorf("%s and %s share uid %s", n, other, d.UID)
		}
		uids[d.UID] = n
		out[n] = d
	}
	return out
}

// TestDashboardsWellFormed: every panel queries the dashboard's "datasource" variable (so a
// provisioned or hand-imported copy finds its Prometheus), has queries with distinct refIds, and
// lies inside Grafana's 24-column grid without overlapping another.
func TestDashboardsWellFormed(t *testing.T) {
	for name, d := range loadAll(t) {
		if !slices.ContainsFunc(d.Templating.List, func(v dashboards.Variable) bool { return v.Name == "datasource" && v.Type == "datasource" }) {
			t.Errorf("%s: no datasource variable", name)
		}
		type cell struct{ x, y int }
		taken := map[cell]string{}
		for _, p := range d.Panels {
			g := p.GridPos
			if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
				t.Errorf("%s: panel %q gridPos %+v", name, p.Title, g)
			}
			for x := g.X; x < g.X+g.W; x++ {
				for y := g.Y; y < g.Y+g.H; y++ {
					if other, ok := taken[cell{x, y}]; ok {
						t.Fatalf("%s: panel %q overlaps %q at %d,%d", name, p.Title, other, x, y)
					}
					taken[cell{x, y}] = p.Title
				}
			}
		}
		ids := map[int]bool{}
		for _, p := range d.AllPanels() {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d twice", name, p.ID)
			}
			ids[p.ID] = true
			if p.Datasource["uid"] != "${datasource}" {
				t.Errorf("%s: panel %q datasource %v, want the ${datasource} variable", name, p.Title, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", name, p.Title)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if refs[tg.RefID] || tg.RefID == "" {
					t.Errorf("%s: panel %q refId %q missing or twice", name, p.Title, tg.RefID)
				}
				refs[tg.RefID] = true
				if tg.Datasource["uid"] != "${datasource}" {
					t.Errorf("%s: panel %q query %s datasource %v", name, p.Title, tg.RefID, tg.Datasource)
				}
			}
		}
	}
}

// TestDashboardQueriesParse parses every PromQL expression of every dashboard (panel queries and
// label_values() selectors, Grafana variables substituted) with Prometheus's own parser, and
// checks that none groups or selects by an unbounded label.
func TestDashboardQueriesParse(t *testing.T) {
	all := loadAll(t)
	var qs []dashboards.Query
	var exprs []string
	for name, d := range all {
		q, err := d.Queries()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, x := range q {
			x.Where = name + " " + x.Where
			qs = append(qs, x)
			exprs = append(exprs, dashboards.ForPromQL(x.Expr))
		}
	}
	parsed := promtools.Parse(t, exprs)
	metrics := map[string]bool{}
	for i, p := range parsed {
		if p.Error != "" {
			t.Errorf("%s: %s\n%s", qs[i].Where, p.Error, p.Expr)
			continue
		}
		if len(p.Metrics) == 0 {
			t.Errorf("%s selects no metric by name: %s", qs[i].Where, p.Expr)
		}
		for _, m := range p.Metrics {
			metrics[m] = true
		}
		labels := slices.Clone(p.Grouping)
		for _, s := range p.Selectors {
			for _, m := range s.Matchers {
				labels = append(labels, m.Name)
			}
		}
		if qs[i].Label != "" {
			labels = append(labels, qs[i].Label)
		}
		for _, l := range labels {
			if !slices.Contains(boundedLabels, l) {
				t.Errorf("%s uses label %q, not a bounded one %v", qs[i].Where, l, boundedLabels)
			}
		}
		if strings.Contains(p.Expr, "$") {
			t.Errorf("%s: a Grafana variable was not substituted: %s", qs[i].Where, p.Expr)
		}
	}
	// A broken expression is refused (the parser can fail).
	if bad := promtools.Parse(t, []string{dashboards.ForPromQL(`sum by (namespace) (rate(isoobs_dns_queries_total{namespace=~"$namespace"}[$__rate_interval])`)}); bad[0].Error == "" {
		t.Error("an unclosed parenthesis parsed")
	}
	t.Logf("%d dashboards, %d PromQL expressions parsed by Prometheus's parser, %d metrics", len(all), len(exprs), len(metrics))
}
