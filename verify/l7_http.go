package verify

import (
	"context"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// HTTP L7 visibility: Cilium's proxy (and so Hubble) sees HTTP requests only of pods a
// CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy with http rules selects (ingress rules:
// the requests the pod serves; egress rules: those it sends). top http says so per namespace.

type httpPorts struct {
	ToPorts []struct {
		Rules *struct {
			HTTP []map[string]any `json:"http"`
		} `json:"rules"`
	} `json:"toPorts"`
}

type cnpHTTPSpec struct {
	EndpointSelector metav1.LabelSelector `json:"endpointSelector"`
	Ingress          []httpPorts          `json:"ingress"`
	Egress           []httpPorts          `json:"egress"`
}

type cnpHTTPObject struct {
	Spec  *cnpHTTPSpec  `json:"spec"`
	Specs []cnpHTTPSpec `json:"specs"`
}

func (s cnpHTTPSpec) hasHTTPRules() bool {
	for _, rules := range [][]httpPorts{s.Ingress, s.Egress} {
		for _, r := range rules {
			for _, tp := range r.ToPorts {
				if tp.Rules != nil && tp.Rules.HTTP != nil {
					return true
				}
			}
		}
	}
	return false
}

// HTTPNamespace is one namespace's HTTP L7 visibility.
type HTTPNamespace struct {
	Namespace string
	// Pods are the running pods (host-network pods apart), VisiblePods those an http rule selects.
	Pods, VisiblePods int
	// Policies that select pods here, "namespace/name" (clusterwide: name).
	Policies []string
	// Unseen are the workloads with pods no http rule selects.
	Unseen []string
}

// HTTPVisibility reports, for each namespace (all with running pods, system namespaces apart,
// when namespaces is empty), how many of its pods an L7 HTTP policy selects. A cluster without
// the CiliumNetworkPolicy CRD returns the API's NotFound error.
func HTTPVisibility(ctx context.Context, dyn dynamic.Interface, cs kubernetes.Interface, namespaces []string) ([]HTTPNamespace, error) {
	var sels []dnsSelector // the same shape: a policy's selector and namespace
	for _, gvr := range []schema.GroupVersionResource{cnpGVR, ccnpGVR} {
		list, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		for _, item := range list.Items {
			var obj cnpHTTPObject
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(item.Object, &obj); err != nil {
				continue
			}
			specs := obj.Specs
			if obj.Spec != nil {
				specs = append(specs, *obj.Spec)
			}
			for _, s := range specs {
				if !s.hasHTTPRules() {
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
				sels = append(sels, dnsSelector{policy: name, namespace: item.GetNamespace(), selector: sel})
			}
		}
	}
	var pods []corev1.Pod
	if len(namespaces) == 0 {
		l, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		for _, p := range l.Items {
			if !slices.Contains(SystemNamespaces, p.Namespace) {
				pods = append(pods, p)
			}
		}
	} else {
		for _, ns := range namespaces {
			l, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return nil, err
			}
			pods = append(pods, l.Items...)
		}
	}
	byNS := map[string]*HTTPNamespace{}
	for _, ns := range namespaces {
		byNS[ns] = &HTTPNamespace{Namespace: ns}
	}
	for i := range pods {
		p := &pods[i]
		if p.Spec.HostNetwork || p.Status.Phase != corev1.PodRunning {
			continue
		}
		n := byNS[p.Namespace]
		if n == nil {
			n = &HTTPNamespace{Namespace: p.Namespace}
			byNS[p.Namespace] = n
		}
		n.Pods++
		hit := false
		for _, s := range sels {
			if selects(s, p) {
				hit = true
				if !slices.Contains(n.Policies, s.policy) {
					n.Policies = append(n.Policies, s.policy)
				}
			}
		}
		if hit {
			n.VisiblePods++
		} else if w := workloadOf(p); !slices.Contains(n.Unseen, w) {
			n.Unseen = append(n.Unseen, w)
		}
	}
	out := make([]HTTPNamespace, 0, len(byNS))
	for _, n := range byNS {
		sort.Strings(n.Policies)
		sort.Strings(n.Unseen)
		out = append(out, *n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Namespace < out[j].Namespace })
	return out, nil
}
