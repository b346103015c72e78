// Package install puts the isoobs observability stack in place with the Helm
// SDK: Cilium with Hubble, Tetragon, the metrics pipeline and the isoobs
// daemon, each a Helm release, installed or upgraded idempotently, shown
// (--dry-run, --show-values) before touching anything, and removed again by
// Uninstall. Values come from package install/values.
package install

import (
	"fmt"
	"slices"
	"strings"

	"github.com/isoobs/isoobs/install/values"
)

// Component is one part of the stack, installed as one Helm release.
type Component string

const (
	ComponentCilium     Component = "cilium"
	ComponentDNSProxy   Component = "cilium-dnsproxy" // Isovalent DNS Proxy HA, enterprise only
	ComponentTetragon   Component = "tetragon"
	ComponentPrometheus Component = "prometheus" // --pipeline prometheus
	ComponentSplunk     Component = "splunk-otel-collector"
	ComponentIsoobs     Component = "isoobs"
)

// AllComponents lists every component in install order (uninstall goes backwards).
var AllComponents = []Component{ComponentCilium, ComponentDNSProxy, ComponentTetragon, ComponentPrometheus, ComponentSplunk, ComponentIsoobs}

// Repositories of the published charts.
const (
	RepoCilium    = "https://helm.cilium.io"
	RepoIsovalent = "https://helm.isovalent.com"
	RepoSplunk    = "https://signalfx.github.io/splunk-otel-collector-chart"
)

// Spec says where a component's chart comes from and where it goes.
type Spec struct {
	Component Component
	Release   string
	Namespace string
	// Chart is the chart's name in Repo; empty Repo means no published chart
	// (embedded, or --chart-dir only).
	Chart string
	Repo  string
	// Version is the tested default pin; empty means the repository's latest.
	Version string
	// Tested says whether Version was rendered and installed by this repository's tests.
	Tested bool
	// Hint tells the user where to get the chart when it has no repository or the repository is unreachable.
	Hint string
}

// Specs returns the specs for an edition (enterprise switches Cilium and
// Tetragon to the Isovalent charts of seed 001).
func Specs(edition values.Edition) map[Component]Spec {
	s := map[Component]Spec{
		ComponentCilium: {
			Component: ComponentCilium, Release: "cilium", Namespace: values.NamespaceCilium,
			Chart: "cilium", Repo: RepoCilium, Version: "1.20.2", Tested: true,
			Hint: "the chart is in the cilium source tree at install/kubernetes/cilium (git clone -b v1.20.2 https://github.com/cilium/cilium, or $(go env GOMODCACHE)/github.com/cilium/cilium@v1.20.2/install/kubernetes/cilium after go mod download github.com/cilium/cilium@v1.20.2)",
		},
		ComponentTetragon: {
			Component: ComponentTetragon, Release: "tetragon", Namespace: values.NamespaceTetragon,
			Chart: "tetragon", Repo: RepoCilium, Version: "1.0.0", Tested: true,
			Hint: "the chart is in the tetragon source tree at install/kubernetes (git clone -b v1.0.0 https://github.com/cilium/tetragon, or $(go env GOMODCACHE)/github.com/cilium/tetragon@v1.0.0/install/kubernetes)",
		},
		ComponentPrometheus: {
			// The chart creates its own namespace (cilium-monitoring) and names it in every object,
			// so the release record lives in the isoobs namespace.
			Component: ComponentPrometheus, Release: "cilium-monitoring", Namespace: values.NamespaceIsoobs,
			Chart: "prometheus", Tested: true,
			Hint: "the prometheus pipeline installs Cilium's example Prometheus + Grafana chart, which no Helm repository publishes: pass --chart-dir prometheus=DIR with DIR = examples/kubernetes/addons/prometheus of the cilium source tree (v1.20.2), e.g. $(go env GOMODCACHE)/github.com/cilium/cilium@v1.20.2/examples/kubernetes/addons/prometheus",
		},
		ComponentSplunk: {
			Component: ComponentSplunk, Release: "splunk-otel-collector", Namespace: values.NamespaceSplunk,
			Chart: "splunk-otel-collector", Repo: RepoSplunk,
			Hint: "download the chart where the repository is reachable (helm pull splunk-otel-collector --repo " + RepoSplunk + " --untar) and pass --chart-dir splunk-otel-collector=DIR",
		},
		ComponentIsoobs: {
			Component: ComponentIsoobs, Release: "isoobs", Namespace: values.NamespaceIsoobs,
			Chart: "isoobs", Version: "0.1.0", Tested: true,
			Hint: "the chart is embedded in kubectl-isoobs",
		},
	}
	if edition == values.EditionEnterprise {
		c := s[ComponentCilium]
		c.Repo, c.Version, c.Tested = RepoIsovalent, "1.18.4", false
		c.Hint = "download it where " + RepoIsovalent + " is reachable (helm pull cilium --repo " + RepoIsovalent + " --version 1.18.4 --untar) and pass --chart-dir cilium=DIR"
		s[ComponentCilium] = c
		t := s[ComponentTetragon]
		t.Repo, t.Version, t.Tested = RepoIsovalent, "1.18.0", false
		t.Hint = "download it where " + RepoIsovalent + " is reachable (helm pull tetragon --repo " + RepoIsovalent + " --version 1.18.0 --untar) and pass --chart-dir tetragon=DIR"
		s[ComponentTetragon] = t
		s[ComponentDNSProxy] = Spec{
			Component: ComponentDNSProxy, Release: "cilium-dnsproxy", Namespace: values.NamespaceCilium,
			Chart: "cilium-dnsproxy", Repo: RepoIsovalent, Version: "1.16.7",
			Hint: "download it where " + RepoIsovalent + " is reachable (helm pull cilium-dnsproxy --repo " + RepoIsovalent + " --version 1.16.7 --untar) and pass --chart-dir cilium-dnsproxy=DIR",
		}
	}
	return s
}

// DefaultComponents returns what install sets up when --components is not given.
func DefaultComponents(edition values.Edition, pipeline values.Pipeline) []Component {
	out := []Component{ComponentCilium}
	if edition == values.EditionEnterprise {
		out = append(out, ComponentDNSProxy)
	}
	out = append(out, ComponentTetragon)
	switch pipeline {
	case values.PipelinePrometheus:
		out = append(out, ComponentPrometheus)
	case values.PipelineSplunk:
		out = append(out, ComponentSplunk)
	}
	return append(out, ComponentIsoobs)
}

// ParseComponents parses a --components list against the edition and pipeline.
func ParseComponents(list []string, edition values.Edition, pipeline values.Pipeline) ([]Component, error) {
	if len(list) == 0 {
		return DefaultComponents(edition, pipeline), nil
	}
	specs := Specs(edition)
	var picked []Component
	for _, name := range list {
		c := Component(strings.TrimSpace(name))
		if c == "splunk" {
			c = ComponentSplunk
		}
		if !slices.Contains(AllComponents, c) {
			return nil, fmt.Errorf("--components: unknown component %q: use any of %s", name, componentNames(AllComponents))
		}
		if _, ok := specs[c]; !ok {
			return nil, fmt.Errorf("--components: %s exists only with --edition enterprise", c)
		}
		if c == ComponentPrometheus && pipeline != values.PipelinePrometheus || c == ComponentSplunk && pipeline != values.PipelineSplunk {
			return nil, fmt.Errorf("--components: %s belongs to another pipeline than --pipeline %s: pass --pipeline %s, or drop %s", c, pipeline, pipelineOf(c), c)
		}
		if !slices.Contains(picked, c) {
			picked = append(picked, c)
		}
	}
	// Install order, whatever order the flag gave.
	slices.SortFunc(picked, func(a, b Component) int { return slices.Index(AllComponents, a) - slices.Index(AllComponents, b) })
	return picked, nil
}

func pipelineOf(c Component) values.Pipeline {
	if c == ComponentSplunk {
		return values.PipelineSplunk
	}
	return values.PipelinePrometheus
}

func componentNames(cs []Component) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = string(c)
	}
	return strings.Join(parts, ", ")
}
