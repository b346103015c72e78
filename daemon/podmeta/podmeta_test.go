package podmeta

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

func pod(name string, labels map[string]string, kind, owner string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: labels, UID: types.UID("uid-" + name)}}
	if kind != "" {
		yes := true
		p.OwnerReferences = []metav1.OwnerReference{{Kind: kind, Name: owner, Controller: &yes}}
	}
	return p
}

func TestOwner(t *testing.T) {
	tests := []struct {
		pod      *corev1.Pod
		workload string
		kind     string
	}{
		{pod("crawler-7d9f8b6c5-x2x9z", map[string]string{"pod-template-hash": "7d9f8b6c5"}, "ReplicaSet", "crawler-7d9f8b6c5"), "crawler", "Deployment"},
		{pod("a-b-c-5f6d-q", map[string]string{"pod-template-hash": "5f6d"}, "ReplicaSet", "a-b-c-5f6d"), "a-b-c", "Deployment"},
		// A bare ReplicaSet (no template hash, or hash not matching) stays a ReplicaSet.
		{pod("rs-abcde", nil, "ReplicaSet", "rs"), "rs", "ReplicaSet"},
		{pod("rs2-abcde", map[string]string{"pod-template-hash": "zzz"}, "ReplicaSet", "rs2-yyy"), "rs2-yyy", "ReplicaSet"},
		{pod("cilium-x7k2p", nil, "DaemonSet", "cilium"), "cilium", "DaemonSet"},
		{pod("kafka-0", nil, "StatefulSet", "kafka"), "kafka", "StatefulSet"},
		{pod("loader-28934520-abcde", nil, "Job", "loader-28934520"), "loader", "CronJob"},
		{pod("migrate-xyz", nil, "Job", "migrate"), "migrate", "Job"},
		{pod("kube-apiserver-node1", nil, "Node", "node1"), "kube-apiserver-node1", "Pod"},
		{pod("debug", nil, "", ""), "debug", "Pod"},
	}
	for _, tt := range tests {
		w, k := Owner(tt.pod)
		if w != tt.workload || k != tt.kind {
			t.Errorf("Owner(%s) = %s/%s, want %s/%s", tt.pod.Name, k, w, tt.kind, tt.workload)
		}
	}
	// A non-controller owner reference does not make a workload.
	p := pod("x", nil, "", "")
	p.OwnerReferences = []metav1.OwnerReference{{Kind: "ConfigMap", Name: "cm"}}
	if w, k := Owner(p); w != "x" || k != "Pod" {
		t.Errorf("non-controller owner: %s/%s", k, w)
	}
}

func TestWatcherLookupAndDelete(t *testing.T) {
	mine := pod("mine", map[string]string{"app": "crawler"}, "DaemonSet", "ds")
	mine.Spec.NodeName = "node-a"
	cs := fake.NewClientset(mine)
	w := newWatcher(cs, "node-a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w.Start(ctx)
	if !w.WaitSynced(ctx) {
		t.Fatal("not synced")
	}
	got, ok := w.Lookup("uid-mine")
	if !ok || got.Name != "mine" || got.Workload != "ds" || got.WorkloadKind != "DaemonSet" || got.Labels["app"] != "crawler" {
		t.Fatalf("Lookup = %+v %v", got, ok)
	}
	if c, msg := w.Connected(); !c {
		t.Fatalf("not connected: %s", msg)
	}
	if err := cs.CoreV1().Pods("ns").Delete(ctx, "mine", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for w.Len() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if w.Len() != 0 {
		t.Fatal("deleted pod still known")
	}
}
