package verify

import (
	"context"
	"fmt"
	"io"
	"sync"

	corev1 "k8s.io/api/core/v1"

	"github.com/isoobs/isoobs/k8s"
)

// Daemon metrics read for probes and Hubble. isoobs_hubble_connected is
// read when the daemon exports it (older daemons do not).
const (
	metricProbesAttached  = "isoobs_probes_attached"
	metricHubbleConnected = "isoobs_hubble_connected"
)

// checkIsoobsDaemons: one Ready daemon per node, each with probes attached
// (and, when it reports it, connected to Hubble), read from its metrics
// endpoint through the pod proxy.
func checkIsoobsDaemons(ctx context.Context, e *env) Result {
	ns := e.Namespaces.Isoobs
	r := daemonSetResult(ctx, e, ns, LabelIsoobsDaemon, "isoobs", true)
	if r.Status == StatusFail && len(r.Items) == 0 {
		return r // no DaemonSet, or the API failed
	}
	pods, err := e.pods(ctx, ns, LabelIsoobsDaemon)
	if err != nil {
		return apiErr("listing isoobs pods", err)
	}
	type probe struct {
		pod     *corev1.Pod
		sums    map[string]float64
		err     error
		hasHubb bool
	}
	var ready []*corev1.Pod
	for i := range pods {
		if k8s.PodReady(&pods[i]) {
			ready = append(ready, &pods[i])
		}
	}
	if len(ready) > maxMetricsPods {
		ready = ready[:maxMetricsPods]
	}
	answers := make([]probe, len(ready))
	var wg sync.WaitGroup
	for i, p := range ready {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, err := e.proxyGet(ctx, p, "", PortIsoobs, "metrics")
			if err != nil {
				answers[i] = probe{pod: p, err: err}
				return
			}
			defer body.Close()
			sums, err := sumSamples(io.LimitReader(body, 64<<20), metricProbesAttached, metricHubbleConnected)
			_, has := sums[metricHubbleConnected]
			answers[i] = probe{pod: p, sums: sums, err: err, hasHubb: has}
		}()
	}
	wg.Wait()
	items := r.Items
	var bad []string
	hubbleReported, hubbleOK, hubbleOff, probesOK := 0, 0, 0, 0
	for _, a := range answers {
		where := a.pod.Spec.NodeName + " " + a.pod.Name
		switch {
		case a.err != nil:
			bad = append(bad, where+": metrics :9966: "+a.err.Error())
		case a.sums[metricProbesAttached] == 0:
			bad = append(bad, where+": no eBPF probe attached")
		default:
			probesOK++
		}
		// A daemon told --hubble-server=off (what install sets on a cluster without Cilium)
		// reports isoobs_hubble_connected 0: not a fault.
		if hubbleDisabled(a.pod) {
			hubbleOff++
			continue
		}
		if a.hasHubb {
			hubbleReported++
			if a.sums[metricHubbleConnected] > 0 {
				hubbleOK++
			} else {
				bad = append(bad, where+": not connected to Hubble")
			}
		}
	}
	items = append(items, bad...)
	hubble := "Hubble connection not reported by this daemon version"
	switch {
	case hubbleReported > 0:
		hubble = fmt.Sprintf("Hubble connected on %d/%d", hubbleOK, hubbleReported)
	case hubbleOff > 0 && hubbleOff == len(answers):
		hubble = "Hubble off (--hubble-server=off)"
	}
	detail := fmt.Sprintf("%s; probes attached on %d/%d checked; %s", r.Detail, probesOK, len(answers), hubble)
	if r.Status == StatusFail {
		return Result{Status: StatusFail, Detail: detail, Items: items, Next: r.Next}
	}
	if len(bad) > 0 {
		pod := ready[0]
		for _, a := range answers {
			if a.err != nil || a.sums[metricProbesAttached] == 0 || (a.hasHubb && !hubbleDisabled(a.pod) && a.sums[metricHubbleConnected] == 0) {
				pod = a.pod
				break
			}
		}
		return Result{Status: StatusFail, Detail: detail, Items: items,
			Next: fmt.Sprintf("kubectl -n %s logs %s; kubectl get --raw /api/v1/namespaces/%s/pods/%s:%d/proxy/readyz", ns, pod.Name, ns, pod.Name, PortIsoobs)}
	}
	return Result{Status: r.Status, Detail: detail, Items: items, Next: r.Next}
}

// hubbleDisabled: the daemon container runs with --hubble-server=off.
func hubbleDisabled(p *corev1.Pod) bool {
	for _, c := range p.Spec.Containers {
		for i, a := range c.Args {
			if a == "--hubble-server=off" || (a == "--hubble-server" && i+1 < len(c.Args) && c.Args[i+1] == "off") {
				return true
			}
		}
	}
	return false
}
