package install

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/isoobs/isoobs/install/values"
)

// UninstallOptions is one `kubectl isoobs uninstall` run.
type UninstallOptions struct {
	DryRun  bool
	Wait    bool
	Timeout time.Duration
}

// Uninstall removes what Install created, newest component first: releases
// carrying LabelManaged (not adopted ones), the token and state Secrets, and
// the namespaces isoobs created. Anything else is left alone.
func (i *Installer) Uninstall(ctx context.Context, o UninstallOptions) ([]string, error) {
	seen := map[string]bool{}
	var specs []Spec
	for _, ed := range values.Editions {
		for _, c := range AllComponents {
			s, ok := Specs(ed)[c]
			if ok && !seen[s.Namespace+"/"+s.Release] {
				seen[s.Namespace+"/"+s.Release] = true
				specs = append(specs, s)
			}
		}
	}
	slices.Reverse(specs)
	verb := "removed"
	if o.DryRun {
		verb = "would remove"
	}
	var removed []string
	removedReleases := map[string][]string{} // namespace -> releases removed (or, dry run, to remove)
	for _, s := range specs {
		cur, err := i.currentRelease(s)
		if err != nil {
			return removed, err
		}
		if cur == nil {
			continue
		}
		name := fmt.Sprintf("%s (%s/%s)", s.Component, s.Namespace, s.Release)
		switch {
		case cur.Labels[LabelManaged] != "true":
			fmt.Fprintf(i.out, "%s: not installed by isoobs, left in place\n", name)
			continue
		case cur.Labels[LabelAdopted] == "true":
			fmt.Fprintf(i.out, "%s: adopted with --adopt, not created by isoobs: left in place (helm uninstall %s -n %s removes it)\n", name, s.Release, s.Namespace)
			continue
		}
		if !o.DryRun {
			cfg, err := i.helmConfig(s.Namespace)
			if err != nil {
				return removed, err
			}
			un := action.NewUninstall(cfg)
			un.Wait, un.Timeout = o.Wait, o.Timeout
			if un.Timeout == 0 {
				un.Timeout = 5 * time.Minute
			}
			if _, err := un.Run(s.Release); err != nil {
				return removed, fmt.Errorf("%s: helm uninstall: %w", name, err)
			}
		}
		fmt.Fprintf(i.out, "%s: %s\n", name, verb)
		removed = append(removed, "release "+s.Namespace+"/"+s.Release)
		removedReleases[s.Namespace] = append(removedReleases[s.Namespace], s.Release)
	}
	sel := metav1.ListOptions{LabelSelector: LabelManaged + "=true"}
	for _, ns := range []string{values.NamespaceSplunk, values.NamespaceIsoobs} {
		secrets, err := i.client.CoreV1().Secrets(ns).List(ctx, sel)
		if err != nil && !apierrors.IsNotFound(err) {
			return removed, err
		}
		for _, sec := range secrets.Items {
			if !o.DryRun {
				if err := i.client.CoreV1().Secrets(ns).Delete(ctx, sec.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
					return removed, fmt.Errorf("deleting Secret %s/%s: %w", ns, sec.Name, err)
				}
			}
			fmt.Fprintf(i.out, "secret %s/%s: %s\n", ns, sec.Name, verb)
			removed = append(removed, "secret "+ns+"/"+sec.Name)
		}
	}
	nss, err := i.client.CoreV1().Namespaces().List(ctx, sel)
	if err != nil {
		return removed, err
	}
	for _, ns := range nss.Items {
		// A namespace isoobs created may since hold someone else's objects: it is only deleted
		// when nothing is left in it but what isoobs (or Kubernetes, for it) made.
		foreign, err := i.foreignObjects(ctx, ns.Name, removedReleases[ns.Name])
		if err != nil {
			fmt.Fprintf(i.out, "namespace %s: left in place: cannot tell whether it holds objects isoobs did not create (%v); delete it yourself once you know: kubectl delete namespace %s\n", ns.Name, err, ns.Name)
			continue
		}
		if len(foreign) > 0 {
			shown := foreign
			if len(shown) > 10 {
				shown = append(shown[:10:10], fmt.Sprintf("and %d more", len(foreign)-10))
			}
			fmt.Fprintf(i.out, "namespace %s: left in place: it holds %d object(s) isoobs did not create: %s (move or delete them, then run uninstall again; or kubectl delete namespace %s deletes them with it)\n",
				ns.Name, len(foreign), strings.Join(shown, ", "), ns.Name)
			continue
		}
		if !o.DryRun {
			if err := i.client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return removed, fmt.Errorf("deleting namespace %s: %w", ns.Name, err)
			}
		}
		fmt.Fprintf(i.out, "namespace %s: %s\n", ns.Name, verb)
		removed = append(removed, "namespace "+ns.Name)
	}
	if len(removed) == 0 {
		fmt.Fprintln(i.out, "nothing installed by isoobs found")
	}
	return removed, nil
}

// foreignObjects lists, as resource/name, what namespace ns holds that isoobs did not create:
// every listable namespaced resource except what is removed with isoobs' releases (objects of
// the releases in removing, their Helm records, objects labeled LabelManaged), objects a
// controller owns (ownerReferences: pods of a DaemonSet being deleted), objects being deleted,
// what Kubernetes puts in every namespace (ServiceAccount default, ConfigMap kube-root-ca.crt),
// and runtime records (Events, Endpoints, EndpointSlices, Leases).
func (i *Installer) foreignObjects(ctx context.Context, ns string, removing []string) ([]string, error) {
	lists, err := i.client.Discovery().ServerPreferredNamespacedResources()
	if err != nil {
		return nil, fmt.Errorf("listing the API's resources: %w", err)
	}
	cfg, err := i.getter.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	skipKinds := map[string]bool{"Event": true, "Endpoints": true, "EndpointSlice": true, "Lease": true}
	builtin := map[string]bool{"ServiceAccount/default": true, "ConfigMap/kube-root-ca.crt": true}
	var out []string
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			return nil, err
		}
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || skipKinds[r.Kind] || !slices.Contains(r.Verbs, "list") {
				continue
			}
			items, err := dyn.Resource(gv.WithResource(r.Name)).Namespace(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err) {
					continue
				}
				return nil, fmt.Errorf("listing %s in %s: %w", r.Name, ns, err)
			}
			for _, obj := range items.Items {
				switch {
				case builtin[r.Kind+"/"+obj.GetName()],
					obj.GetDeletionTimestamp() != nil,
					len(obj.GetOwnerReferences()) > 0,
					obj.GetLabels()[LabelManaged] == "true" && obj.GetLabels()[LabelAdopted] != "true",
					slices.Contains(removing, obj.GetAnnotations()["meta.helm.sh/release-name"]) && obj.GetAnnotations()["meta.helm.sh/release-namespace"] == ns,
					r.Kind == "Secret" && obj.GetLabels()["owner"] == "helm" && slices.Contains(removing, obj.GetLabels()["name"]):
					continue
				}
				out = append(out, r.Name+"/"+obj.GetName())
			}
		}
	}
	slices.Sort(out)
	return out, nil
}
