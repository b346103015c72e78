package podmeta

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
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

// The informer's trimmed pods keep spec.hostNetwork and the addresses: a hostNetwork pod's
// status.podIPs are the node's, and the drops view must know it.
func TestWatcherKeepsHostNetwork(t *testing.T) {
	proxy := pod("kube-proxy-x", nil, "DaemonSet", "kube-proxy")
	proxy.Spec = corev1.PodSpec{NodeName: "node-a", HostNetwork: true, DNSPolicy: corev1.DNSClusterFirstWithHostNet,
		Containers: []corev1.Container{{Name: "kube-proxy", Image: "registry.k8s.io/kube-proxy:v1.34.4"}}}
	proxy.Status.PodIPs = []corev1.PodIP{{IP: "172.18.0.2"}, {IP: "fd00:18::2"}}
	web := pod("web-0", nil, "StatefulSet", "web")
	web.Spec.NodeName = "node-a"
	web.Status.PodIPs = []corev1.PodIP{{IP: "10.34.2.5"}}
	w := newWatcher(fake.NewClientset(proxy, web), "node-a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w.Start(ctx)
	if !w.WaitSynced(ctx) {
		t.Fatal("not synced")
	}
	got, ok := w.Lookup("uid-kube-proxy-x")
	if !ok || !got.HostNetwork || strings.Join(got.IPs, ",") != "172.18.0.2,fd00:18::2" {
		t.Errorf("hostNetwork pod: %+v %v; want HostNetwork and both node addresses", got, ok)
	}
	got, ok = w.Lookup("uid-web-0")
	if !ok || got.HostNetwork || strings.Join(got.IPs, ",") != "10.34.2.5" {
		t.Errorf("pod: %+v %v; want not HostNetwork, 10.34.2.5", got, ok)
	}
	// What the informer stores is trimmed: the containers of the spec are gone, the flag stays.
	obj, exists, err := w.inf.GetStore().GetByKey("ns/kube-proxy-x")
	if err != nil || !exists {
		t.Fatalf("store: %v %v", exists, err)
	}
	if sp := obj.(*corev1.Pod).Spec; len(sp.Containers) != 0 || sp.DNSPolicy != "" || !sp.HostNetwork || sp.NodeName != "node-a" {
		t.Errorf("stored spec %+v, want only nodeName and hostNetwork", sp)
	}
}

// An API server that accepts connections and never answers (a blackholed Service IP behaves
// the same) must show up in Connected as the reachability error within a check or two, not as
// "not synced yet" until the list's own TLS timeout and backoff.
func TestWatcherReportsUnreachableAPIServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))
	host := "https://" + ln.Addr().String()
	w, err := NewWatcher(&rest.Config{Host: host, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}, "node-a", logger)
	if err != nil {
		t.Fatal(err)
	}
	w.reachTimeout = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.Start(ctx)
	deadline := time.Now().Add(5 * time.Second)
	var msg string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, msg = w.Connected(); ok {
			t.Fatal("connected to a server that never answers")
		}
		if strings.Contains(msg, "cannot reach the Kubernetes API server "+host) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(msg, "cannot reach the Kubernetes API server "+host) || !strings.Contains(msg, "deadline exceeded") {
		t.Fatalf("Connected() = %q, want the unreachable API server named with its timeout", msg)
	}
	logMu.Lock()
	out := logs.String()
	logMu.Unlock()
	if n := strings.Count(out, "cannot reach the Kubernetes API server"); n < 1 {
		t.Errorf("nothing logged: %q", out)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
