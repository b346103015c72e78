package install

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/kubectl/pkg/util/podutils"
)

// maxPodsExplained bounds how many not-ready pods a --wait report names (a DaemonSet on 500
// nodes usually fails the same way everywhere).
const maxPodsExplained = 3

// whyNotReady says, for up to maxPodsExplained pods of w that are not ready, what holds each
// back, in the order an SRE would look: a container waiting (image pull, mount, create error),
// a crash loop, a pod that cannot be scheduled, the pod's newest warning event, and for a
// container that runs but fails its readiness probe, the last lines it logged (the isoobs
// daemon logs there why /readyz fails, e.g. an unreachable API server).
func (i *Installer) whyNotReady(ctx context.Context, w workload) []string {
	sel, err := i.selector(ctx, w)
	if err != nil || sel == "" {
		return nil
	}
	pods, err := i.client.CoreV1().Pods(w.namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return []string{fmt.Sprintf("listing its pods: %v", err)}
	}
	items := pods.Items
	sort.Slice(items, func(a, b int) bool { return items[a].Name < items[b].Name })
	var out []string
	for k := range items {
		p := &items[k]
		if podutils.IsPodReady(p) {
			continue
		}
		if len(out) == maxPodsExplained {
			out = append(out, "(more pods not ready)")
			break
		}
		where := "pod " + p.Name
		if p.Spec.NodeName != "" {
			where += " on " + p.Spec.NodeName
		}
		out = append(out, where+": "+i.podProblem(ctx, p))
	}
	return out
}

func (i *Installer) podProblem(ctx context.Context, p *corev1.Pod) string {
	statuses := append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
	for _, cs := range statuses {
		if wt := cs.State.Waiting; wt != nil && wt.Reason != "" && wt.Reason != "PodInitializing" && wt.Reason != "ContainerCreating" {
			msg := fmt.Sprintf("container %s %s", cs.Name, wt.Reason)
			if wt.Message != "" {
				msg += ": " + oneLine(wt.Message)
			}
			if t := cs.LastTerminationState.Terminated; t != nil {
				msg += fmt.Sprintf(" (restarted %d times, last exit code %d%s)", cs.RestartCount, t.ExitCode, logTail(i.lastLog(ctx, p, cs.Name, true)))
			}
			return msg
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return "not scheduled: " + oneLine(c.Message)
		}
	}
	ev := i.lastWarning(ctx, p)
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Running != nil && !cs.Ready {
			// Running but not ready: the probe event says only "statuscode: 503"; the log says why.
			if tail := i.lastLog(ctx, p, cs.Name, false); tail != "" {
				if ev == "" {
					return "container " + cs.Name + " runs but is not ready; it last logged: " + tail
				}
				return ev + "; container " + cs.Name + " last logged: " + tail
			}
		}
	}
	if ev != "" {
		return ev
	}
	if p.Status.Phase == corev1.PodPending {
		return "pending (" + orUnknown(p.Status.Reason) + ")"
	}
	return "not ready yet"
}

// lastWarning is the newest Warning event about the pod, as "Reason: message".
func (i *Installer) lastWarning(ctx context.Context, p *corev1.Pod) string {
	evs, err := i.client.CoreV1().Events(p.Namespace).List(ctx, metav1.ListOptions{FieldSelector: fields.Set{
		"involvedObject.name": p.Name, "involvedObject.namespace": p.Namespace, "type": corev1.EventTypeWarning}.String()})
	if err != nil || len(evs.Items) == 0 {
		return ""
	}
	last := evs.Items[0]
	for _, e := range evs.Items[1:] {
		if eventTime(e).After(eventTime(last)) {
			last = e
		}
	}
	return last.Reason + ": " + oneLine(last.Message)
}

func eventTime(e corev1.Event) time.Time {
	if !e.LastTimestamp.IsZero() {
		return e.LastTimestamp.Time
	}
	if !e.EventTime.IsZero() {
		return e.EventTime.Time
	}
	return e.FirstTimestamp.Time
}

// lastLog returns the container's last non-empty log line (of its previous run with previous).
func (i *Installer) lastLog(ctx context.Context, p *corev1.Pod, container string, previous bool) string {
	tail := int64(5)
	b, err := i.client.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: container, TailLines: &tail, Previous: previous}).DoRaw(ctx)
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	for k := len(lines) - 1; k >= 0; k-- {
		if l := strings.TrimSpace(string(lines[k])); l != "" {
			return l
		}
	}
	return ""
}

func logTail(l string) string {
	if l == "" {
		return ""
	}
	return "; it last logged: " + l
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func orUnknown(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}

// selector is the workload's pod label selector as a string.
func (i *Installer) selector(ctx context.Context, w workload) (string, error) {
	var ls *metav1.LabelSelector
	switch w.kind {
	case "DaemonSet":
		ds, err := i.client.AppsV1().DaemonSets(w.namespace).Get(ctx, w.name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		ls = ds.Spec.Selector
	case "Deployment":
		d, err := i.client.AppsV1().Deployments(w.namespace).Get(ctx, w.name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		ls = d.Spec.Selector
	}
	if ls == nil {
		return "", nil
	}
	s, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return "", err
	}
	return s.String(), nil
}
