package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/testlab"
)

// Tracing one pod streams exactly its DNS messages — each query and its answer, with name,
// rcode, latency, server and the container named in the pod's status — and nothing of another
// pod resolving on the same node at the same time.
func TestTracePod(t *testing.T) {
	lab := testlab.StartForTest(t, testlab.Options{Nodes: []string{nodeA}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, app := range []string{"traced", "bystander"} {
		if err := lab.Apply(ctx, pinnedDeployment(app, nodeA)); err != nil {
			t.Fatal(err)
		}
	}
	traced, bystander := adopted(t, ctx, lab, "traced"), adopted(t, ctx, lab, "bystander")
	// The container's ID as the runtime would report it in the pod's status.
	containerID := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(traced.ContainerCgroupPath), "cri-containerd-"), ".scope")
	pods := lab.Client().CoreV1().Pods(traced.Namespace)
	p, err := pods.Get(ctx, traced.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "resolver", ContainerID: "containerd://" + containerID, Ready: true,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}}}
	if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	a := startDaemon(t, lab, nodeA)

	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	// The daemon finds the pod once its pod list and cgroup walk have it: retry until a stream
	// stays open (no NotFound) for a second.
	var events chan *isoobsv1.DNSEvent
	for deadline := time.Now().Add(20 * time.Second); ; {
		stream, err := a.client.Trace(sctx, &isoobsv1.TraceRequest{Namespace: traced.Namespace, Pod: traced.Name})
		if err != nil {
			t.Fatal(err)
		}
		evs, errc := make(chan *isoobsv1.DNSEvent, 256), make(chan error, 1)
		go func() {
			defer close(evs)
			for {
				ev, err := stream.Recv()
				if err != nil {
					errc <- err
					return
				}
				evs <- ev
			}
		}()
		select {
		case err := <-errc:
			if time.Now().After(deadline) {
				t.Fatalf("trace never started: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
			continue
		case <-time.After(time.Second):
		}
		events = evs
		break
	}

	const noerror, nxdomain = 5, 3
	run := func(p string, queries string) {
		pod := lab.Pod("tenant-jobs", p)
		c := pod.Command(ctx, os.Args[0], "-test.run=^TestHelperVictim$")
		c.Env = append(os.Environ(), "E2E_VICTIM_SERVER="+netip.AddrPortFrom(lab.DNSServiceIP, 53).String(), "E2E_VICTIM_QUERIES="+queries)
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", p, err, out)
		}
	}
	run(bystander.Name, "4,0")
	run(traced.Name, fmt.Sprintf("%d,%d", noerror, nxdomain))

	var got []string
	timeout := time.After(20 * time.Second)
	for len(got) < 2*(noerror+nxdomain) {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("trace ended after %d events", len(got))
			}
			if ev.Pod != traced.Name || ev.Container != "resolver" || ev.Node != nodeA || ev.DroppedBefore != 0 {
				t.Errorf("event %v", ev)
			}
			if ev.Server != netip.AddrPortFrom(lab.DNSServiceIP, 53).String() || ev.Protocol != "udp" || ev.Qtype != "A" {
				t.Errorf("event server/protocol/qtype: %v", ev)
			}
			if ev.Kind == "answer" && (ev.LatencyMs <= 0 || ev.LatencyMs > 5000) {
				t.Errorf("answer latency %v ms", ev.LatencyMs)
			}
			got = append(got, ev.Kind+" "+ev.Qname+" "+ev.Rcode)
		case <-timeout:
			t.Fatalf("%d events within 20 s: %v", len(got), got)
		}
	}
	select {
	case ev := <-events:
		t.Errorf("an event more than the pod's messages: %v", ev)
	case <-time.After(500 * time.Millisecond):
	}
	sort.Strings(got)
	var want []string
	for i := 0; i < nxdomain; i++ {
		want = append(want, "answer nx-victim.example.com NXDOMAIN")
	}
	for i := 0; i < noerror; i++ {
		want = append(want, "answer c.noerror.test NOERROR")
	}
	for i := 0; i < noerror; i++ {
		want = append(want, "query c.noerror.test ")
	}
	for i := 0; i < nxdomain; i++ {
		want = append(want, "query nx-victim.example.com ")
	}
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("traced:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
