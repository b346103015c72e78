package install

import (
	"helm.sh/helm/v3/pkg/chart"

	"github.com/isoobs/isoobs/deploy/alerts"
)

// prometheusRuleTemplate ships isoobs' alerting rules (deploy/alerts) as a PrometheusRule where
// the Prometheus operator's CRD exists and values.Daemon enables it (metrics.prometheusRule:
// enabled, labels — e.g. the release label an operator's ruleSelector wants). The rules are the
// chart file's text, not templated: their {{ $labels }} are Prometheus's, not Helm's.
const prometheusRuleTemplate = `{{- $pr := default dict .Values.metrics.prometheusRule }}
{{- if and $pr.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PrometheusRule") }}
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: {{ include "isoobs.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "isoobs.labels" . | nindent 4 }}
    {{- with $pr.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
{{ .Files.Get "files/` + alerts.FileName + `" | indent 2 }}
{{- end }}
`

// PrometheusRuleTemplateName is the template addAlertRules puts into the isoobs chart.
const PrometheusRuleTemplateName = "templates/isoobs-prometheusrule.yaml"

// addAlertRules puts the rules file and the PrometheusRule template into the isoobs chart
// (embedded, --chart-dir or a repository's), replacing any earlier copy.
func addAlertRules(ch *chart.Chart) {
	files := []*chart.File{{Name: "files/" + alerts.FileName, Data: alerts.Rules()}}
	for _, f := range ch.Files {
		if f.Name != files[0].Name {
			files = append(files, f)
		}
	}
	ch.Files = files
	tmpls := []*chart.File{{Name: PrometheusRuleTemplateName, Data: []byte(prometheusRuleTemplate)}}
	for _, f := range ch.Templates {
		if f.Name != PrometheusRuleTemplateName {
			tmpls = append(tmpls, f)
		}
	}
	ch.Templates = tmpls
}
