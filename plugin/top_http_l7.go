package plugin

import (
	"context"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/isoobs/isoobs/plugin/top"
	"github.com/isoobs/isoobs/verify"
)

// l7Info is what top http learns from the Kubernetes API before it streams: which pods in view
// Hubble can see HTTP for, the warnings that makes, and the Services of pods.
type l7Info struct {
	visibility []top.L7Namespace
	warnings   []string
	services   top.ServiceOf
}

// defaultCheckL7 asks the Kubernetes API which pods in view an L7 HTTP policy selects (as
// verify does for DNS) and lists the Services in view. In cluster mode a failure is a warning;
// with --daemon or --local a kubeconfig that does not work is skipped silently (those modes do
// not need one).
func (o *TopHTTPOptions) defaultCheckL7(ctx context.Context) l7Info {
	s := o.src
	clusterMode := !s.Local && len(s.DaemonAddrs) == 0
	fail := func(why string) l7Info {
		if !clusterMode {
			return l7Info{}
		}
		return l7Info{warnings: []string{"L7 HTTP visibility not checked (" + why + "): Hubble has HTTP flows only for pods a CiliumNetworkPolicy with http rules selects"}}
	}
	if s.ConfigFlags == nil {
		return fail("no kubeconfig")
	}
	cfg, err := s.ConfigFlags.ToRESTConfig()
	if err != nil {
		return fail(err.Error())
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fail(err.Error())
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fail(err.Error())
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var namespaces []string
	if !s.AllNamespaces && s.namespace != "" {
		namespaces = []string{s.namespace}
	}
	var info l7Info
	info.services = serviceLookup(ctx, cs, namespaces)
	vis, err := verify.HTTPVisibility(ctx, dyn, cs, namespaces)
	if apierrors.IsNotFound(err) {
		info.warnings = []string{"the CiliumNetworkPolicy CRD is not installed: without Cilium L7 (http) policies Hubble has no HTTP flows, so top http has nothing to show"}
		return info
	}
	if err != nil {
		if !clusterMode && ctx.Err() != nil {
			return info
		}
		f := fail(err.Error())
		f.services = info.services
		return f
	}
	info.visibility = make([]top.L7Namespace, len(vis))
	for i, n := range vis {
		info.visibility[i] = top.L7Namespace{Namespace: n.Namespace, Pods: n.Pods, VisiblePods: n.VisiblePods, Policies: n.Policies, UnseenGroups: n.Unseen}
	}
	info.warnings = l7Warnings(info.visibility)
	return info
}

// serviceLookup lists the Services in view once and names those whose selector a pod's labels
// match; nil when they cannot be listed.
func serviceLookup(ctx context.Context, cs kubernetes.Interface, namespaces []string) top.ServiceOf {
	type svc struct {
		name string
		sel  labels.Selector
	}
	byNS := map[string][]svc{}
	list := func(ns string) bool {
		l, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		for _, s := range l.Items {
			if len(s.Spec.Selector) == 0 {
				continue
			}
			byNS[s.Namespace] = append(byNS[s.Namespace], svc{s.Namespace + "/" + s.Name, labels.SelectorFromSet(s.Spec.Selector)})
		}
		return true
	}
	if len(namespaces) == 0 {
		if !list("") {
			return nil
		}
	}
	for _, ns := range namespaces {
		if !list(ns) {
			return nil
		}
	}
	return func(ns string, podLabels map[string]string) string {
		if len(podLabels) == 0 {
			return ""
		}
		var names []string
		for _, s := range byNS[ns] {
			if s.sel.Matches(labels.Set(podLabels)) {
				names = append(names, s.name)
			}
		}
		slices.Sort(names)
		return strings.Join(names, ",")
	}
}
