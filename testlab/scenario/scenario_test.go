package scenario

import (
	"context"
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/isoobs/isoobs/testlab"
)

func TestApply(t *testing.T) {
	lab := testlab.StartForTest(t, testlab.Options{ID: "tscn"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	app, err := Apply(ctx, lab)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, w := range Workloads {
		pods := app.Pods(w.Name)
		if len(pods) != int(w.Replicas) {
			t.Errorf("%s: %d pods, want %d", w.Name, len(pods), w.Replicas)
		}
		nodes := map[string]bool{}
		for _, p := range pods {
			total++
			nodes[p.API.Spec.NodeName] = true
			if p.API.Labels["app"] != w.Name || p.API.Namespace != Namespace {
				t.Errorf("pod %s/%s labels %v", p.API.Namespace, p.API.Name, p.API.Labels)
			}
			if p.Net.UID != p.API.UID || p.Net.IPv4.String() != p.API.Status.PodIP {
				t.Errorf("pod %s: node side %s/%s, API %s/%s", p.API.Name, p.Net.UID, p.Net.IPv4, p.API.UID, p.API.Status.PodIP)
			}
		}
		if want := min(int(w.Replicas), len(lab.Nodes)); len(nodes) != want {
			t.Errorf("%s pods on %d nodes, want %d (spread)", w.Name, len(nodes), want)
		}
	}
	if got := len(app.AllPods()); got != total || len(app.NormalPods()) != total-1 {
		t.Errorf("AllPods %d NormalPods %d, want %d and %d", got, len(app.NormalPods()), total, total-1)
	}
	if c := app.CrawlerPod(); c.API.Labels["app"] != Crawler {
		t.Errorf("CrawlerPod is %s", c.API.Name)
	}
	svcs, err := lab.Client().CoreV1().Services(Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range svcs.Items {
		if !lab.ServiceCIDR.Contains(mustAddr(t, s.Spec.ClusterIP)) {
			t.Errorf("service %s ClusterIP %s outside the lab's %s", s.Name, s.Spec.ClusterIP, lab.ServiceCIDR)
		}
	}
	if len(svcs.Items) != len(Workloads) {
		t.Errorf("%d services, want %d", len(svcs.Items), len(Workloads))
	}
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatalf("bad address %q: %v", s, err)
	}
	return a
}
