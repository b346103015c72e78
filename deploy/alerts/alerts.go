// Package alerts embeds isoobs' Prometheus alerting rules (isoobs-alerts.rules.yaml): the
// prometheus pipeline loads them into its Prometheus as a rules file, and the isoobs chart ships
// them as a PrometheusRule where the Prometheus operator's CRDs exist (see install).
package alerts

import (
	_ "embed"
	"fmt"

	"sigs.k8s.io/yaml"
)

// FileName is the rules file's name, in this directory and where install puts it.
const FileName = "isoobs-alerts.rules.yaml"

//go:embed isoobs-alerts.rules.yaml
var rules []byte

// Rules returns the rules file: a Prometheus rule_files document ("groups: ...") that is also
// the spec of a PrometheusRule.
func Rules() []byte { return append([]byte(nil), rules...) }

// Rule is one recording or alerting rule.
type Rule struct {
	Record      string            `json:"record,omitempty"`
	Alert       string            `json:"alert,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Group is a rule group.
type Group struct {
	Name  string `json:"name"`
	Rules []Rule `json:"rules"`
}

// Groups parses a rules file.
func Groups(data []byte) ([]Group, error) {
	var doc struct {
		Groups []Group `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(data, &doc); err != nil {
		return nil, fmt.Errorf("rules file: %w", err)
	}
	return doc.Groups, nil
}
