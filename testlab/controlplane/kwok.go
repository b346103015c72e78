package controlplane

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// kwokStageFiles are the stages the lab uses, relative to kwok's kustomize/stage directory.
var kwokStageFiles = []string{
	"node/fast/node-initialize.yaml",
	"node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
	"pod/fast/pod-ready.yaml",
	"pod/fast/pod-complete.yaml",
	"pod/fast/pod-delete.yaml",
}

// writeKwokConfig concatenates the stage files into one kwok --config file, with pod-ready
// patched so the lab owns pod IPs (see patchPodReady).
func writeKwokConfig(dir, stagesDir string) (string, error) {
	var docs []string
	for _, rel := range kwokStageFiles {
		data, err := os.ReadFile(filepath.Join(stagesDir, rel))
		if err != nil {
			return "", fmt.Errorf("kwok stage file missing (rerun testlab/scripts/build-bins.sh kwok): %w", err)
		}
		doc := string(data)
		if rel == "pod/fast/pod-ready.yaml" {
			if doc, err = patchPodReady(doc); err != nil {
				return "", fmt.Errorf("%s: %w", rel, err)
			}
		}
		docs = append(docs, strings.TrimSpace(doc))
	}
	path := filepath.Join(dir, "kwok.yaml")
	return path, os.WriteFile(path, []byte(strings.Join(docs, "\n---\n")+"\n"), 0o644)
}

// patchPodReady adapts kwok v0.8's pod-ready stage to a lab that owns pod IPs.
//
// kwok allocates pod IPs itself: the stage's status template calls PodIPsWith, which takes the
// next address from an in-memory pool per node podCIDR, and merge-patches status.podIP(s). The
// lab instead allocates from podnet, configures the address inside the pod's netns and then
// patches status.podIPs. So this stage (1) waits until status.podIP is set — the lab's signal that
// the pod's network exists — and (2) drops the PodIPsWith block so the merge patch leaves the
// lab's addresses alone. (kwok still marks those IPs used in its pool; harmless.)
func patchPodReady(doc string) (string, error) {
	const selectorAnchor = "  selector:\n    matchExpressions:\n"
	if !strings.Contains(doc, selectorAnchor) {
		return "", fmt.Errorf("selector not found; kwok's pod-ready stage changed shape")
	}
	doc = strings.Replace(doc, selectorAnchor, selectorAnchor+
		"    - key: '.status.podIP'\n      operator: 'Exists'\n", 1)

	lines := strings.Split(doc, "\n")
	start := -1
	for i, l := range lines {
		if strings.Contains(l, "PodIPsWith") {
			start = i
			break
		}
	}
	if start < 0 {
		return "", fmt.Errorf("PodIPsWith block not found; kwok's pod-ready stage changed shape")
	}
	// The block is `{{ $podIPs := PodIPsWith ... }}` then `{{ with $podIPs }} ... {{ range }} ... {{ end }} {{ end }}`.
	ends, end := 0, -1
	for i := start + 1; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) == "{{ end }}" {
			ends++
			if ends == 2 {
				end = i
				break
			}
		}
	}
	if end < 0 {
		return "", fmt.Errorf("end of PodIPsWith block not found; kwok's pod-ready stage changed shape")
	}
	lines = append(lines[:start], lines[end+1:]...)
	return strings.Join(lines, "\n"), nil
}
