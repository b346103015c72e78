package image

import (
	"context"
	"path"
	"testing"

	"github.com/isoobs/isoobs/install"
	"github.com/isoobs/isoobs/install/values"
)

// TestDaemonDirsCoverChartMounts renders the chart `kubectl isoobs install` deploys and checks
// every volumeMount of the daemon is a directory of the image, so a read-only root needs no
// mount point created (and a new mount in the chart shows up here).
func TestDaemonDirsCoverChartMounts(t *testing.T) {
	spec := install.Specs(values.EditionOSS)[install.ComponentIsoobs]
	ch, err := install.LoadChart(context.Background(), spec, install.Source{})
	if err != nil {
		t.Fatal(err)
	}
	vals, err := install.FinalValues(install.ComponentIsoobs, values.Defaults(), nil)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := install.Render(ch, spec, vals, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := install.Objects(rel)
	if err != nil {
		t.Fatal(err)
	}
	ds := install.Find(objs, "DaemonSet", "isoobs")
	if ds == nil {
		t.Fatal("no isoobs DaemonSet")
	}
	dirs := map[string]bool{}
	for _, f := range append(append([]File(nil), BaseFiles...), DaemonDirs...) {
		if f.Mode.IsDir() {
			dirs[f.Path] = true
		}
	}
	podSpec := ds.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	c := podSpec["containers"].([]any)[0].(map[string]any)
	sc := c["securityContext"].(map[string]any)
	if sc["readOnlyRootFilesystem"] != true {
		t.Errorf("the chart's root is not read-only: %v", sc)
	}
	n := 0
	for _, m := range c["volumeMounts"].([]any) {
		p := path.Clean(m.(map[string]any)["mountPath"].(string))
		n++
		if !dirs[p] {
			t.Errorf("the chart mounts %s, not a directory of the image (DaemonDirs)", p)
		}
	}
	if n == 0 {
		t.Error("no volumeMounts in the DaemonSet")
	}
}
