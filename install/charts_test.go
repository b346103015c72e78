package install

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
)

// The Cilium and Tetragon charts ship inside their Go modules; tests find them
// with `go mod download -json` (the modules are not in go.mod: too heavy).
var (
	moduleDirsMu sync.Mutex
	moduleDirs   = map[string]string{}
)

func moduleDir(t testing.TB, modVersion string) string {
	t.Helper()
	moduleDirsMu.Lock()
	defer moduleDirsMu.Unlock()
	if d, ok := moduleDirs[modVersion]; ok {
		return d
	}
	out, err := exec.Command("go", "mod", "download", "-json", modVersion).Output()
	if err != nil {
		t.Fatalf("go mod download -json %s: %v (the chart tests need the Go module proxy or a warm module cache)", modVersion, err)
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(out, &info); err != nil || info.Dir == "" {
		t.Fatalf("go mod download -json %s: %s %v", modVersion, info.Error, err)
	}
	moduleDirs[modVersion] = info.Dir
	return info.Dir
}

func ciliumChartDir(t testing.TB) string {
	return filepath.Join(moduleDir(t, "github.com/cilium/cilium@v1.20.2"), "install/kubernetes/cilium")
}

func tetragonChartDir(t testing.TB) string {
	return filepath.Join(moduleDir(t, "github.com/cilium/tetragon@v1.0.0"), "install/kubernetes")
}

func monitoringChartDir(t testing.TB) string {
	return filepath.Join(moduleDir(t, "github.com/cilium/cilium@v1.20.2"), "examples/kubernetes/addons/prometheus")
}

// localSources points every component that has a local chart at it.
func localSources(t testing.TB) map[Component]Source {
	return map[Component]Source{
		ComponentCilium:     {Dir: ciliumChartDir(t)},
		ComponentTetragon:   {Dir: tetragonChartDir(t)},
		ComponentPrometheus: {Dir: monitoringChartDir(t)},
	}
}

func loadDir(t testing.TB, dir string) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}
