// Command promql-lint parses PromQL expressions with Prometheus's own parser
// (github.com/prometheus/prometheus/promql/parser, the version promtool is
// built from) and prints, for each, the parse error or the metric names and
// label matchers it selects. The dashboard and alert tests of deploy/ run it
// on every expression they ship; hack/build-promql-lint.sh builds it into the
// isoobs tool cache. A module of its own so the repo's go.mod stays free of
// the Prometheus server's dependency graph.
//
// Input (stdin): a JSON array of strings. Output (stdout): a JSON array of
// {"expr", "error", "metrics", "selectors"} in the same order.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

type matcher struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Value string `json:"value"`
}

type selector struct {
	Metric   string    `json:"metric"` // empty when the selector has no fixed __name__
	Matchers []matcher `json:"matchers"`
}

type result struct {
	Expr      string     `json:"expr"`
	Error     string     `json:"error,omitempty"`
	Metrics   []string   `json:"metrics"`
	Selectors []selector `json:"selectors"`
	// Grouping lists the label names of every by/without and on/ignoring clause.
	Grouping []string `json:"grouping"`
}

func main() {
	var exprs []string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintln(os.Stderr, "promql-lint: stdin is not a JSON array of strings:", err)
		os.Exit(2)
	}
	out := make([]result, 0, len(exprs))
	for _, e := range exprs {
		r := result{Expr: e, Metrics: []string{}, Selectors: []selector{}, Grouping: []string{}}
		node, err := parser.ParseExpr(e)
		if err != nil {
			r.Error = err.Error()
			out = append(out, r)
			continue
		}
		metrics, grouping := map[string]bool{}, map[string]bool{}
		parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
			switch n := n.(type) {
			case *parser.VectorSelector:
				s := selector{Matchers: []matcher{}}
				for _, m := range n.LabelMatchers {
					if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
						s.Metric = m.Value
						metrics[m.Value] = true
						continue
					}
					s.Matchers = append(s.Matchers, matcher{Name: m.Name, Type: m.Type.String(), Value: m.Value})
				}
				r.Selectors = append(r.Selectors, s)
			case *parser.AggregateExpr:
				for _, g := range n.Grouping {
					grouping[g] = true
				}
			case *parser.BinaryExpr:
				if n.VectorMatching != nil {
					for _, g := range n.VectorMatching.MatchingLabels {
						grouping[g] = true
					}
					for _, g := range n.VectorMatching.Include {
						grouping[g] = true
					}
				}
			}
			return nil
		})
		r.Metrics = keys(metrics)
		r.Grouping = keys(grouping)
		out = append(out, r)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "promql-lint:", err)
		os.Exit(1)
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
