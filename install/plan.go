package install

import (
	"fmt"

	"github.com/isoobs/isoobs/install/values"
)

// GeneratedValues returns the values isoobs derives for a component from the
// options alone (before the user's overrides).
func GeneratedValues(c Component, o values.Options) map[string]any {
	switch c {
	case ComponentCilium:
		return values.Cilium(o)
	case ComponentDNSProxy:
		return values.DNSProxy(o)
	case ComponentTetragon:
		return values.Tetragon(o)
	case ComponentSplunk:
		return values.SplunkCollector(o)
	case ComponentIsoobs:
		return values.Daemon(o)
	case ComponentPrometheus:
		// Cilium's example chart only takes image versions; its configuration is in its files
		// (PrepareMonitoringChart).
		return map[string]any{}
	}
	return map[string]any{}
}

// FinalValues merges the user's overrides for c over the generated values.
func FinalValues(c Component, o values.Options, ov Overrides) (map[string]any, error) {
	v := MergeValues(GeneratedValues(c, o), ov[c])
	n, err := normalize(v)
	if err != nil {
		return nil, fmt.Errorf("%s: values: %w", c, err)
	}
	return n, nil
}
