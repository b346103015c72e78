// Package deploy embeds the isoobs daemon's Helm chart (deploy/chart) so
// `kubectl isoobs install` needs no chart repository for its own component.
package deploy

import (
	"embed"
	"fmt"
	"io/fs"
	"path"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
)

// chartFiles holds deploy/chart; "all:" keeps _helpers.tpl, which the
// default embed pattern would drop for its leading underscore.
//
//go:embed all:chart
var chartFiles embed.FS

// ChartDir is the chart's directory inside ChartFS.
const ChartDir = "chart"

// ChartFS returns the embedded chart files, rooted at the chart directory.
func ChartFS() fs.FS {
	sub, err := fs.Sub(chartFiles, ChartDir)
	if err != nil {
		panic(err) // ChartDir is a constant that the embed directive guarantees.
	}
	return sub
}

// Chart loads the embedded daemon chart.
func Chart() (*chart.Chart, error) {
	var files []*loader.BufferedFile
	err := fs.WalkDir(chartFiles, ChartDir, func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := chartFiles.ReadFile(name)
		if err != nil {
			return err
		}
		rel, _ := relPath(ChartDir, name)
		files = append(files, &loader.BufferedFile{Name: rel, Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the embedded isoobs chart: %w", err)
	}
	c, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("loading the embedded isoobs chart: %w", err)
	}
	return c, nil
}

func relPath(dir, name string) (string, bool) {
	prefix := path.Clean(dir) + "/"
	if len(name) > len(prefix) && name[:len(prefix)] == prefix {
		return name[len(prefix):], true
	}
	return name, false
}

// DefaultValues are the chart's values.yaml, as Helm reads them: what the daemon runs with
// unless an install overrides it (benchmarks take the daemon's GOMEMLIMIT and memory limit here).
func DefaultValues() (map[string]any, error) {
	c, err := Chart()
	if err != nil {
		return nil, err
	}
	return c.Values, nil
}
