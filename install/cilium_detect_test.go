package install

import (
	"context"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// The daemon's Hubble socket is only mounted where Cilium runs: ciliumRuns finds the agent
// DaemonSet by its label in any namespace.
func TestCiliumRuns(t *testing.T) {
	if (&Installer{client: fake.NewClientset()}).ciliumRuns(context.Background()) {
		t.Error("empty cluster: Cilium reported running")
	}
	other := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "kube-proxy"}}}
	if (&Installer{client: fake.NewClientset(other)}).ciliumRuns(context.Background()) {
		t.Error("kube-proxy only: Cilium reported running")
	}
	cilium := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "cilium", Namespace: "cilium-system", Labels: map[string]string{"k8s-app": "cilium"}}}
	if !(&Installer{client: fake.NewClientset(other, cilium)}).ciliumRuns(context.Background()) {
		t.Error("Cilium in cilium-system not found")
	}
}
