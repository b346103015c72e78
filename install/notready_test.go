package install

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/isoobs/isoobs/install/values"
)

// --wait names what holds each pod back: the runtime's message for a container that cannot be
// created, the scheduler's for a pod that cannot be placed, and for a running pod failing its
// readiness probe the probe event plus the container's last log line (where the daemon says
// why /readyz fails).
func TestWhyNotReady(t *testing.T) {
	sel := map[string]string{"app.kubernetes.io/name": "isoobs"}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "isoobs", Namespace: "isoobs"},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: sel}}}
	pod := func(name, node string, st corev1.PodStatus) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "isoobs", Labels: sel},
			Spec: corev1.PodSpec{NodeName: node}, Status: st}
	}
	mountErr := "failed to generate container spec: path \"/sys/fs/bpf\" is mounted on \"/sys\" but it is not a shared or slave mount"
	creating := pod("isoobs-a", "node-a", corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{
		Name: "daemon", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CreateContainerError", Message: mountErr}}}}})
	running := pod("isoobs-b", "node-b", corev1.PodStatus{Phase: corev1.PodRunning,
		Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: "daemon", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}})
	unscheduled := pod("isoobs-c", "", corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{
		Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Message: "0/3 nodes are available: 3 Insufficient memory."}}})
	ready := pod("isoobs-d", "node-d", corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}})
	now := time.Now()
	ev := func(name, reason, msg string, at time.Time) *corev1.Event {
		return &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "isoobs"}, Type: corev1.EventTypeWarning, Reason: reason, Message: msg,
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "isoobs-b", Namespace: "isoobs"}, LastTimestamp: metav1.NewTime(at)}
	}
	cs := fake.NewClientset(ds, creating, running, unscheduled, ready,
		ev("old", "BackOff", "older", now.Add(-time.Minute)),
		ev("new", "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503", now))
	i := &Installer{client: cs}
	got := i.explain(context.Background(), []workload{{"DaemonSet", "isoobs", "isoobs"}})
	want := []string{
		"daemonset/isoobs pod isoobs-a on node-a: container daemon CreateContainerError: " + mountErr,
		// The fake clientset answers every log request with "fake logs".
		"daemonset/isoobs pod isoobs-b on node-b: Unhealthy: Readiness probe failed: HTTP probe failed with statuscode: 503; container daemon last logged: fake logs",
		"daemonset/isoobs pod isoobs-c: not scheduled: 0/3 nodes are available: 3 Insufficient memory.",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("explain:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Near the --timeout, client-go's rate limiter refuses a request it could not send in time; that
// is the timeout (with what holds the pods back), not "reading ... failed" (seen on the real node:
// "reading isoobs/daemonset/isoobs: client rate limiter Wait returned an error: rate: Wait(n=1)
// would exceed context deadline"). A Deployment that cannot be read is not ready either.
func TestWaitRateLimiterAtDeadlineIsTheTimeout(t *testing.T) {
	cs := fake.NewClientset()
	cs.PrependReactor("get", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("client rate limiter Wait returned an error: rate: Wait(n=1) would exceed context deadline")
	})
	inst := &Installer{client: cs, out: io.Discard, pollInterval: 50 * time.Millisecond}
	spec := Specs(values.EditionOSS)[ComponentIsoobs]
	for _, kind := range []string{"DaemonSet", "Deployment"} {
		err := inst.waitWorkloads(context.Background(), spec, []workload{{kind, "isoobs", "isoobs"}}, 300*time.Millisecond)
		if err == nil || !strings.Contains(err.Error(), "not ready after 300ms") || strings.Contains(err.Error(), "reading") {
			t.Errorf("%s: %v, want the timeout", kind, err)
		}
	}
}
