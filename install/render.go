package install

import (
	"fmt"
	"regexp"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/releaseutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// DefaultKubeVersion is what client-only renders assume without a cluster:
// the lab's control plane version. Helm's own default (1.20) fails the
// Cilium chart's kubeVersion constraint.
const DefaultKubeVersion = "v1.34.4"

// Render renders a chart client-side, as `helm template` does.
// apiVersions adds API groups/kinds to the capabilities (e.g.
// "monitoring.coreos.com/v1/ServiceMonitor").
func Render(ch *chart.Chart, spec Spec, vals map[string]any, kubeVersion string, apiVersions []string) (*release.Release, error) {
	if kubeVersion == "" {
		kubeVersion = DefaultKubeVersion
	}
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, fmt.Errorf("kube version %q: %w", kubeVersion, err)
	}
	inst := action.NewInstall(&action.Configuration{})
	inst.ClientOnly = true
	inst.DryRun = true
	inst.Replace = true
	inst.IncludeCRDs = true
	inst.ReleaseName = spec.Release
	inst.Namespace = spec.Namespace
	inst.KubeVersion = kv
	inst.APIVersions = apiVersions
	inst.DisableHooks = false
	rel, err := inst.Run(ch, vals)
	if err != nil {
		return nil, fmt.Errorf("%s: rendering chart %s %s: %w%s", spec.Component, ch.Name(), ch.Metadata.Version, err, schemaKeys(spec.Component, err))
	}
	return rel, nil
}

var schemaPointer = regexp.MustCompile(`at '(/[^']*)'`)

// schemaKeys turns the JSON pointers of a values-schema error into the
// --set keys the user typed (/hubble/enabled -> cilium.hubble.enabled).
func schemaKeys(c Component, err error) string {
	var keys []string
	for _, m := range schemaPointer.FindAllStringSubmatch(err.Error(), -1) {
		keys = append(keys, string(c)+strings.ReplaceAll(m[1], "/", "."))
	}
	if len(keys) == 0 {
		return ""
	}
	return fmt.Sprintf("\nfix the value of %s (--set/-f)", strings.Join(keys, ", "))
}

// Manifest is one rendered object with the template it came from.
type Manifest struct {
	Source string
	Object *unstructured.Unstructured
}

// Objects parses a release's manifest and hooks into objects.
func Objects(rel *release.Release) ([]Manifest, error) {
	var out []Manifest
	add := func(source, doc string) error {
		if strings.TrimSpace(doc) == "" {
			return nil
		}
		obj := map[string]any{}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			return fmt.Errorf("%s: %w", source, err)
		}
		if len(obj) == 0 {
			return nil
		}
		out = append(out, Manifest{Source: source, Object: &unstructured.Unstructured{Object: obj}})
		return nil
	}
	for _, doc := range releaseutil.SplitManifests(rel.Manifest) {
		source := ""
		if line, _, ok := strings.Cut(doc, "\n"); ok && strings.HasPrefix(line, "# Source: ") {
			source = strings.TrimPrefix(line, "# Source: ")
		}
		if err := add(source, doc); err != nil {
			return nil, err
		}
	}
	for _, h := range rel.Hooks {
		if err := add(h.Path, h.Manifest); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Find returns the first object of this kind and name, or nil.
func Find(objs []Manifest, kind, name string) *unstructured.Unstructured {
	for _, m := range objs {
		if m.Object.GetKind() == kind && m.Object.GetName() == name {
			return m.Object
		}
	}
	return nil
}
