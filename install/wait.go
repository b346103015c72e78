package install

import (
	"context"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// workload is a DaemonSet or Deployment a release created.
type workload struct {
	kind, namespace, name string
}

func (w workload) String() string { return strings.ToLower(w.kind) + "/" + w.name }

// releaseWorkloads lists the DaemonSets and Deployments in a release's manifest.
func (i *Installer) releaseWorkloads(spec Spec) ([]workload, error) {
	cur, err := i.currentRelease(spec)
	if err != nil || cur == nil {
		return nil, err
	}
	objs, err := Objects(cur)
	if err != nil {
		return nil, err
	}
	var out []workload
	for _, m := range objs {
		kind := m.Object.GetKind()
		if kind != "DaemonSet" && kind != "Deployment" {
			continue
		}
		ns := m.Object.GetNamespace()
		if ns == "" {
			ns = spec.Namespace
		}
		out = append(out, workload{kind, ns, m.Object.GetName()})
	}
	return out, nil
}

// readiness returns ready and wanted pods of a workload, counting only pods
// of the current generation.
func (i *Installer) readiness(ctx context.Context, w workload) (ready, want int32, err error) {
	switch w.kind {
	case "DaemonSet":
		var ds *appsv1.DaemonSet
		ds, err = i.client.AppsV1().DaemonSets(w.namespace).Get(ctx, w.name, metav1.GetOptions{})
		if err != nil {
			return 0, 0, err
		}
		want = ds.Status.DesiredNumberScheduled
		ready = min(ds.Status.NumberReady, ds.Status.UpdatedNumberScheduled)
		if ds.Status.ObservedGeneration < ds.Generation {
			ready = 0
		}
	case "Deployment":
		var d *appsv1.Deployment
		d, err = i.client.AppsV1().Deployments(w.namespace).Get(ctx, w.name, metav1.GetOptions{})
		if err != nil {
			return 0, 0, err
		}
		want = 1
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		ready = min(d.Status.ReadyReplicas, d.Status.UpdatedReplicas)
		if d.Status.ObservedGeneration < d.Generation {
			ready = 0
		}
	}
	return ready, want, nil
}

// wait prints "pods ready N/M" for a component each time it changes, until
// every workload is ready or the timeout passes.
func (i *Installer) wait(ctx context.Context, spec Spec, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	ws, err := i.releaseWorkloads(spec)
	if err != nil {
		return err
	}
	if len(ws) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	tick := time.NewTicker(i.pollInterval)
	defer tick.Stop()
	for {
		var ready, want int32
		var parts, notReady []string
		for _, w := range ws {
			r, n, err := i.readiness(ctx, w)
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("%s: reading %s/%s: %w", spec.Component, w.namespace, w, err)
			}
			ready, want = ready+r, want+n
			parts = append(parts, fmt.Sprintf("%s %d/%d", w, r, n))
			if r < n || n == 0 && w.kind == "DaemonSet" {
				notReady = append(notReady, w.namespace+" "+w.String())
			}
		}
		line := fmt.Sprintf("%s: pods ready %d/%d (%s)", spec.Component, ready, want, strings.Join(parts, ", "))
		if line != last {
			fmt.Fprintln(i.out, line)
			last = line
		}
		if len(notReady) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			first := strings.SplitN(notReady[0], " ", 2)
			return fmt.Errorf("%s: not ready after %s: %s; look at kubectl -n %s describe %s and its pods' events",
				spec.Component, timeout, strings.Join(notReady, ", "), first[0], first[1])
		case <-tick.C:
		}
	}
}
