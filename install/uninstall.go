package install

import (
	"context"
	"fmt"
	"slices"
	"time"

	"helm.sh/helm/v3/pkg/action"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
