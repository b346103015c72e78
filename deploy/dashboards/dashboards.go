// Package dashboards embeds isoobs' Grafana dashboards (*.json in this directory). The prometheus
// pipeline provisions them into its Grafana (install.PrepareMonitoringChart); each is also
// importable by hand (Dashboards > New > Import: it asks for nothing but a Prometheus data
// source, picked by its "datasource" variable).
package dashboards

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
)

//go:embed *.json
var files embed.FS

// Files returns every dashboard by file name (e.g. "isoobs-dns.json"), in name order.
func Files() (names []string, data map[string][]byte) {
	data = map[string][]byte{}
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		panic(err) // the embed directive guarantees the directory
	}
	for _, e := range entries {
		b, err := files.ReadFile(e.Name())
		if err != nil {
			panic(err)
		}
		names = append(names, e.Name())
		data[e.Name()] = b
	}
	slices.Sort(names)
	return names, data
}

// Dashboard is the part of Grafana's dashboard model the tests and install read.
type Dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []Panel `json:"panels"`
	Templating struct {
		List []Variable `json:"list"`
	} `json:"templating"`
}

// Panel is a panel or a row (whose collapsed panels are in Panels).
type Panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource map[string]any `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []Target `json:"targets"`
	Panels  []Panel  `json:"panels"`
}

// Target is one query of a panel.
type Target struct {
	RefID      string         `json:"refId"`
	Expr       string         `json:"expr"`
	Datasource map[string]any `json:"datasource"`
}

// Variable is a template variable.
type Variable struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Query      any    `json:"query"` // a string, or {"query": "..."} in newer Grafana
	Definition string `json:"definition"`
}

// Parse reads a dashboard.
func Parse(b []byte) (*Dashboard, error) {
	var d Dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, err
	}
	if d.UID == "" || d.Title == "" {
		return nil, fmt.Errorf("dashboard without uid or title")
	}
	return &d, nil
}

// AllPanels lists every panel, rows' collapsed panels included, rows excluded.
func (d *Dashboard) AllPanels() []Panel {
	var out []Panel
	var walk func([]Panel)
	walk = func(ps []Panel) {
		for _, p := range ps {
			if p.Type != "row" {
				out = append(out, p)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// Query is one PromQL expression of a dashboard, with where it is.
type Query struct {
	Where string // "panel 3 \"Queries/s by namespace\" A" or "variable namespace"
	Expr  string // as written, with Grafana variables
	// Label is the label a label_values() variable lists ("" for panel queries).
	Label string
}

var labelValues = regexp.MustCompile(`^\s*label_values\((.*?),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

// Queries lists every PromQL expression: panel targets and the selectors of label_values()
// variables.
func (d *Dashboard) Queries() ([]Query, error) {
	var out []Query
	for _, p := range d.AllPanels() {
		for _, t := range p.Targets {
			out = append(out, Query{Where: fmt.Sprintf("panel %d %q %s", p.ID, p.Title, t.RefID), Expr: t.Expr})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := v.Definition
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		} else if s, ok := v.Query.(string); ok {
			q = s
		}
		m := labelValues.FindStringSubmatch(q)
		if m == nil {
			return nil, fmt.Errorf("variable %s: query %q is not label_values(SELECTOR, LABEL)", v.Name, q)
		}
		out = append(out, Query{Where: "variable " + v.Name, Expr: m[1], Label: m[2]})
	}
	return out, nil
}

var (
	rangeVars = regexp.MustCompile(`\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}`)
	userVars  = regexp.MustCompile(`\$\{?([a-zA-Z_][a-zA-Z0-9_]*)\}?`)
)

// ForPromQL replaces Grafana's variables with values Prometheus parses: range variables with 5m,
// others (they sit in label matchers) with "x".
func ForPromQL(expr string) string {
	expr = rangeVars.ReplaceAllString(expr, "5m")
	return userVars.ReplaceAllStringFunc(expr, func(string) string { return "x" })
}
