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

// whyAfter is how long pods may take to become ready before --wait says what holds them back.
var whyAfter = 15 * time.Second

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
	return i.waitWorkloads(ctx, spec, ws, timeout)
}

// deadlineRefused is client-go's rate limiter declining a request it could not send before the
// context's deadline: that is the timeout arriving, not a failure to read.
func deadlineRefused(err error) bool {
	return strings.Contains(err.Error(), "would exceed context deadline")
}

func (i *Installer) waitWorkloads(ctx context.Context, spec Spec, ws []workload, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last, lastWhy := "", ""
	start := time.Now()
	tick := time.NewTicker(i.pollInterval)
	defer tick.Stop()
	for {
		var ready, want int32
		var parts, notReady []string
		var stuck []workload
		for _, w := range ws {
			r, n, err := i.readiness(ctx, w)
			if err != nil {
				if ctx.Err() == nil && !deadlineRefused(err) {
					return fmt.Errorf("%s: reading %s/%s: %w", spec.Component, w.namespace, w, err)
				}
				// The timeout is here: the workload counts as not ready (unread, a Deployment
				// would read 0/0 and pass as ready).
				parts = append(parts, fmt.Sprintf("%s ?", w))
				notReady = append(notReady, w.namespace+" "+w.String())
				stuck = append(stuck, w)
				continue
			}
			ready, want = ready+r, want+n
			parts = append(parts, fmt.Sprintf("%s %d/%d", w, r, n))
			if r < n || n == 0 && w.kind == "DaemonSet" {
				notReady = append(notReady, w.namespace+" "+w.String())
				stuck = append(stuck, w)
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
		// Past a normal start-up, say what holds the pods back (once per change), so nobody
		// waits out the whole timeout to learn that a mount or the API server is the problem.
		var why []string
		if time.Since(start) >= whyAfter && ctx.Err() == nil {
			why = i.explain(ctx, stuck)
			if j := strings.Join(why, "\n"); j != lastWhy {
				for _, l := range why {
					fmt.Fprintf(i.out, "%s:   %s\n", spec.Component, l)
				}
				lastWhy = j
			}
		}
		select {
		case <-ctx.Done():
			first := strings.SplitN(notReady[0], " ", 2)
			if len(why) == 0 {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				why = i.explain(rctx, stuck)
				cancel()
			}
			detail := ""
			if len(why) > 0 {
				detail = ":\n  " + strings.Join(why, "\n  ")
			}
			return fmt.Errorf("%s: not ready after %s: %s; look at kubectl -n %s describe %s and its pods' events and logs%s",
				spec.Component, timeout, strings.Join(notReady, ", "), first[0], first[1], detail)
		case <-tick.C:
		}
	}
}

// explain is whyNotReady for each workload, each line led by the workload's name.
func (i *Installer) explain(ctx context.Context, ws []workload) []string {
	var out []string
	for _, w := range ws {
		for _, r := range i.whyNotReady(ctx, w) {
			out = append(out, w.String()+" "+r)
		}
	}
	return out
}
