package install

import (
	"context"
	"testing"

	"github.com/isoobs/isoobs/deploy"
	"github.com/isoobs/isoobs/install/values"
)

// daemonImage renders the isoobs chart with o and returns the DaemonSet container's image.
func daemonImage(t *testing.T, o values.Options) string {
	t.Helper()
	ch, err := LoadChart(context.Background(), Specs(values.EditionOSS)[ComponentIsoobs], Source{})
	if err != nil {
		t.Fatal(err)
	}
	ds := Find(renderComponent(t, ComponentIsoobs, o, nil, ch), "DaemonSet", "isoobs")
	if ds == nil {
		t.Fatal("no isoobs DaemonSet")
	}
	spec := ds.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	return spec["containers"].([]any)[0].(map[string]any)["image"].(string)
}

// TestDaemonImagePinnedByStampedDigest: a plugin built by `make build` after `make image` installs
// the image it was released with, by digest; --daemon-image still wins.
func TestDaemonImagePinnedByStampedDigest(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	saved := [3]string{deploy.DaemonImageRepository, deploy.DaemonImageTag, deploy.DaemonImageDigest}
	t.Cleanup(func() {
		deploy.DaemonImageRepository, deploy.DaemonImageTag, deploy.DaemonImageDigest = saved[0], saved[1], saved[2]
	})
	o := testOptions(values.ProfileDefault)

	deploy.DaemonImageRepository, deploy.DaemonImageTag, deploy.DaemonImageDigest = "", "", ""
	if got, want := daemonImage(t, o), "ghcr.io/isoobs/isoobs-daemon:0.1.0"; got != want {
		t.Errorf("unstamped: image = %q, want the chart's default %q", got, want)
	}

	deploy.DaemonImageTag, deploy.DaemonImageDigest = "v0.2.0", digest
	if got, want := daemonImage(t, o), "ghcr.io/isoobs/isoobs-daemon@"+digest; got != want {
		t.Errorf("stamped: image = %q, want %q", got, want)
	}

	deploy.DaemonImageRepository = "registry.local:5000/isoobs-daemon"
	if got, want := daemonImage(t, o), "registry.local:5000/isoobs-daemon@"+digest; got != want {
		t.Errorf("stamped repository: image = %q, want %q", got, want)
	}

	o.DaemonImage = "registry.local:5000/mine:dev"
	if got, want := daemonImage(t, o), "registry.local:5000/mine:dev"; got != want {
		t.Errorf("--daemon-image: image = %q, want the override %q", got, want)
	}
	o.DaemonImage = "registry.local:5000/mine@sha256:abc"
	if got, want := daemonImage(t, o), "registry.local:5000/mine@sha256:abc"; got != want {
		t.Errorf("--daemon-image by digest: image = %q, want the override %q", got, want)
	}
}
