package verify

import (
	"strings"
	"testing"

	"github.com/isoobs/isoobs/install/values"
)

// Every stack metric of seed 000's allowlist is checked at exactly one endpoint.
func TestSeedAllowlistCoversThePipelineFilter(t *testing.T) {
	got := 0
	for component, names := range SeedAllowlist {
		for _, n := range names {
			if !strings.HasPrefix(n, strings.Split(component, "-")[0]+"_") {
				t.Errorf("%s is checked at %s", n, component)
			}
		}
		got += len(names)
	}
	want := 0
	for _, n := range values.SplunkMetricAllowlist {
		if strings.Contains(n, "_") && !strings.Contains(n, ".") && n != "node_namespace_pod_container" {
			want++
		}
	}
	if got != want || len(SeedAllowlist["cilium-agent"]) != 12 || len(SeedAllowlist["hubble"]) != 9 {
		t.Errorf("allowlist split: %d names (cilium %d, hubble %d, tetragon %d), want %d (12, 9, rest)", got,
			len(SeedAllowlist["cilium-agent"]), len(SeedAllowlist["hubble"]), len(SeedAllowlist["tetragon"]), want)
	}
}
