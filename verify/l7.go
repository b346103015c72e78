package verify

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	cnpGVR  = schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumnetworkpolicies"}
	ccnpGVR = schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumclusterwidenetworkpolicies"}
)

// SystemNamespaces hold the stack itself; their pods are not the
// applications whose DNS the incident is about.
var SystemNamespaces = []string{"kube-system", "kube-public", "kube-node-lease", "tetragon", "isoobs", "cilium-monitoring", "otel-splunk", "cert-manager"}

// The subset of the CiliumNetworkPolicy schema this check reads.
type cnpSpec struct {
	EndpointSelector metav1.LabelSelector `json:"endpointSelector"`
	Egress           []struct {
		ToPorts []struct {
			Rules *struct {
				DNS []map[string]any `json:"dns"`
			} `json:"rules"`
		} `json:"toPorts"`
	} `json:"egress"`
}

type cnpObject struct {
	Spec  *cnpSpec  `json:"spec"`
	Specs []cnpSpec `json:"specs"`
}

// dnsSelector is one policy spec with DNS rules: the pods it selects.
type dnsSelector struct {
	policy    string
	namespace string // "" for clusterwide
	selector  labels.Selector
}

func (s cnpSpec) hasDNSRules() bool {
	for _, eg := range s.Egress {
		for _, tp := range eg.ToPorts {
			if tp.Rules != nil && len(tp.Rules.DNS) > 0 {
				return true
			}
		}
	}
	return false
}

// ciliumSelector converts an endpointSelector: Cilium label keys may carry
// a source prefix ("k8s:app", "any:app") that pod labels do not.
func ciliumSelector(ls metav1.LabelSelector) (labels.Selector, error) {
	strip := func(k string) string {
		for _, p := range []string{"k8s:", "any:"} {
			k = strings.TrimPrefix(k, p)
		}
		return k
	}
	out := metav1.LabelSelector{MatchLabels: map[string]string{}}
	for k, v := range ls.MatchLabels {
		out.MatchLabels[strip(k)] = v
	}
	for _, r := range ls.MatchExpressions {
		r.Key = strip(r.Key)
		out.MatchExpressions = append(out.MatchExpressions, r)
	}
	return metav1.LabelSelectorAsSelector(&out)
}

// podNamespaceLabel is how Cilium exposes a pod's namespace to selectors.
const podNamespaceLabel = "io.kubernetes.pod.namespace"

func (e *env) dnsSelectors(ctx context.Context) ([]dnsSelector, error) {
	var out []dnsSelector
	for _, gvr := range []schema.GroupVersionResource{cnpGVR, ccnpGVR} {
		list, err := e.Dynamic.Resource(gvr).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		for _, item := range list.Items {
			var obj cnpObject
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(item.Object, &obj); err != nil {
				continue // a policy this check cannot read does not select anything it can show
			}
			specs := obj.Specs
			if obj.Spec != nil {
				specs = append(specs, *obj.Spec)
			}
			for _, s := range specs {
				if !s.hasDNSRules() {
					continue
				}
				sel, err := ciliumSelector(s.EndpointSelector)
				if err != nil {
					continue
				}
				name := item.GetName()
				if item.GetNamespace() != "" {
					name = item.GetNamespace() + "/" + name
				}
				out = append(out, dnsSelector{policy: name, namespace: item.GetNamespace(), selector: sel})
			}
		}
	}
	return out, nil
}

func selects(s dnsSelector, p *corev1.Pod) bool {
	if s.namespace != "" && s.namespace != p.Namespace {
		return false
	}
	set := labels.Set{podNamespaceLabel: p.Namespace}
	for k, v := range p.Labels {
		set[k] = v
	}
	return s.selector.Matches(set)
}

// workloadOf names a pod's owner the way top dns groups it (ReplicaSet
// hashes dropped).
func workloadOf(p *corev1.Pod) string {
	for _, o := range p.OwnerReferences {
		if o.Controller != nil && *o.Controller {
			name := o.Name
			if o.Kind == "ReplicaSet" {
				if i := strings.LastIndex(name, "-"); i > 0 {
					name = name[:i]
				}
			}
			return name
		}
	}
	return p.Name
}

func checkDNSVisibility(ctx context.Context, e *env) Result {
	const consequence = "Hubble sees DNS (L7) only for pods under a CiliumNetworkPolicy with dns rules: hubble_dns_* stay empty for the others; kubectl isoobs top dns still counts them from eBPF"
	if e.Dynamic == nil {
		return Result{Status: StatusSkip, Detail: "no dynamic client"}
	}
	sels, err := e.dnsSelectors(ctx)
	if apierrors.IsNotFound(err) {
		return Result{Status: StatusWarn, Detail: "the CiliumNetworkPolicy CRD is not installed (is Cilium?): " + consequence,
			Next: "kubectl get crd ciliumnetworkpolicies.cilium.io"}
	}
	if err != nil {
		return apiErr("listing CiliumNetworkPolicies", err)
	}
	all, err := e.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return apiErr("listing pods", err)
	}
	uncovered := map[string]int{} // namespace/workload -> pods
	var apps, covered int
	policies := map[string]bool{}
	for i := range all.Items {
		p := &all.Items[i]
		if p.Spec.HostNetwork || slices.Contains(SystemNamespaces, p.Namespace) || p.Status.Phase != corev1.PodRunning {
			continue
		}
		apps++
		hit := false
		for _, s := range sels {
			if selects(s, p) {
				hit = true
				policies[s.policy] = true
			}
		}
		if hit {
			covered++
		} else {
			uncovered[p.Namespace+"/"+workloadOf(p)]++
		}
	}
	pol := sortedKeys(policies)
	if apps == 0 {
		return Result{Status: StatusOK, Detail: fmt.Sprintf("no application pods running; %d DNS policies", len(sels))}
	}
	if len(uncovered) == 0 {
		return Result{Status: StatusOK, Detail: fmt.Sprintf("all %d application pods are under a DNS L7 policy (%s)", apps, strings.Join(pol, ", "))}
	}
	var items []string
	var namespaces []string
	for w, n := range uncovered {
		items = append(items, fmt.Sprintf("%s: %d pod(s) without a DNS policy", w, n))
		ns, _, _ := strings.Cut(w, "/")
		if !slices.Contains(namespaces, ns) {
			namespaces = append(namespaces, ns)
		}
	}
	sort.Strings(items)
	sort.Strings(namespaces)
	detail := fmt.Sprintf("%d/%d application pods not under a DNS L7 policy: %s", apps-covered, apps, consequence)
	if len(sels) == 0 {
		detail = fmt.Sprintf("no CiliumNetworkPolicy has dns rules (%d application pods): %s", apps, consequence)
	}
	return Result{Status: StatusWarn, Detail: detail, Items: items,
		Next: fmt.Sprintf("kubectl isoobs top dns -n %s  # works now, from eBPF; for Hubble DNS metrics apply a CiliumNetworkPolicy with egress toPorts 53 rules.dns [{matchPattern: \"*\"}] in %s", namespaces[0], namespaces[0])}
}
