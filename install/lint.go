package install

import (
	"io/fs"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chartutil"

	"github.com/isoobs/isoobs/deploy"
)

func chartFS() fs.FS { return deploy.ChartFS() }

// lintChart runs `helm lint --strict` on a chart directory.
func lintChart(dir string, vals map[string]any) *action.LintResult {
	l := action.NewLint()
	l.Strict = true
	if kv, err := chartutil.ParseKubeVersion(DefaultKubeVersion); err == nil {
		l.KubeVersion = kv
	}
	return l.Run([]string{dir}, vals)
}
