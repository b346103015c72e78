package install

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"helm.sh/helm/v3/pkg/strvals"
	"sigs.k8s.io/yaml"
)

// Overrides are the user's per-component values, applied over the generated ones.
type Overrides map[Component]map[string]any

// ParseOverrides reads -f/--values and --set/--set-string/--set-file flags.
// Values files are either COMPONENT=FILE or a FILE whose top-level keys are
// component names; --set keys start with the component
// (--set cilium.hubble.ui.enabled=false).
func ParseOverrides(valueFiles, sets, setStrings []string) (Overrides, error) {
	all := map[string]any{}
	for _, vf := range valueFiles {
		comp, file, scoped := strings.Cut(vf, "=")
		if !scoped {
			file = vf
		}
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("-f %s: %w", vf, err)
		}
		m := map[string]any{}
		if err := yaml.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("-f %s: not a YAML map: %w", vf, err)
		}
		if scoped {
			if err := checkComponent(comp, "-f "+vf); err != nil {
				return nil, err
			}
			m = map[string]any{comp: m}
		}
		MergeValues(all, m)
	}
	for _, s := range sets {
		if err := strvals.ParseInto(s, all); err != nil {
			return nil, fmt.Errorf("--set %s: %w (form: --set COMPONENT.KEY=VALUE, e.g. --set cilium.hubble.ui.enabled=false)", s, err)
		}
	}
	for _, s := range setStrings {
		if err := strvals.ParseIntoString(s, all); err != nil {
			return nil, fmt.Errorf("--set-string %s: %w (form: --set-string COMPONENT.KEY=VALUE)", s, err)
		}
	}
	out := Overrides{}
	for key, v := range all {
		if err := checkComponent(key, "override key "+key); err != nil {
			return nil, err
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("override key %q sets a value on the component itself: name a chart key below it, e.g. %s.some.key=VALUE", key, key)
		}
		out[Component(key)] = m
	}
	return out, nil
}

func checkComponent(name, where string) error {
	if name == "splunk" {
		return fmt.Errorf("%s: call the component splunk-otel-collector", where)
	}
	if !slices.Contains(AllComponents, Component(name)) {
		return fmt.Errorf("%s: %q is not a component; values are scoped by component (%s), e.g. --set cilium.hubble.ui.enabled=false or -f cilium=values.yaml", where, name, componentNames(AllComponents))
	}
	return nil
}

// MergeValues merges src into dst: maps merge key by key, anything else in
// src replaces what dst has (lists are replaced, as Helm does).
func MergeValues(dst, src map[string]any) map[string]any {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				dst[k] = MergeValues(dm, sm)
				continue
			}
			dst[k] = MergeValues(map[string]any{}, sm)
			continue
		}
		dst[k] = v
	}
	return dst
}

// normalize round-trips values through YAML so generated values (ints,
// []string) compare equal to what Helm stored (float64, []any).
func normalize(v map[string]any) (map[string]any, error) {
	data, err := yaml.Marshal(v)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		return nil, err
	}
	return out, nil
}
