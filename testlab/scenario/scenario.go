// Package scenario is the seed 000 incident app on a lab: jobs-app in namespace tenant-jobs
// (frontends recruiter and jobposting, API coreapi, pipeline resumes and loader, and the crawler
// that will flood DNS), each a Deployment labelled app=<name> spread over the lab nodes, with a
// ClusterIP Service so normal traffic has real cluster names to resolve.
package scenario

import (
	"context"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/podnet"
)

// Namespace of the app.
const Namespace = "tenant-jobs"

// PartOf is the app.kubernetes.io/part-of label of every workload.
const PartOf = "jobs-app"

// Workload is one Deployment of the app.
type Workload struct {
	Name     string
	Replicas int32
	Port     int32 // Service port
}

// Workloads of seed 000. The crawler is a single pod so "who floods DNS" has one answer.
var Workloads = []Workload{
	{Name: "recruiter", Replicas: 2, Port: 8080},
	{Name: "jobposting", Replicas: 2, Port: 8080},
	{Name: "coreapi", Replicas: 3, Port: 9080},
	{Name: "resumes", Replicas: 1, Port: 8080},
	{Name: "loader", Replicas: 1, Port: 8080},
	{Name: "crawler", Replicas: 1, Port: 8080},
}

// Crawler is the workload that floods DNS in the incident.
const Crawler = "crawler"

// Pod is one app pod: its API object and its node side on this host.
type Pod struct {
	API *corev1.Pod
	Net *podnet.Pod
}

// App is the applied scenario.
type App struct {
	Lab  *testlab.Lab
	pods map[string][]Pod // by workload name, sorted by pod name
}

// Objects returns the Deployments and Services of the app.
func Objects() []any {
	var objs []any
	for _, w := range Workloads {
		d := testlab.NewDeployment(Namespace, w.Name, w.Replicas)
		d.Labels["app.kubernetes.io/part-of"] = PartOf
		d.Spec.Template.Labels["app.kubernetes.io/part-of"] = PartOf
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: w.Name, Labels: map[string]string{"app": w.Name, "app.kubernetes.io/part-of": PartOf}},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": w.Name},
				Ports:    []corev1.ServicePort{{Name: "http", Port: w.Port, TargetPort: intstr.FromInt32(w.Port)}},
			},
		}
		objs = append(objs, d, svc)
	}
	return objs
}

// Apply creates the app on the lab and waits until every pod of it is Running and adopted (has
// its netns and IPs). The kube-system bits (CoreDNS, kube-dns) are the lab's own.
func Apply(ctx context.Context, lab *testlab.Lab) (*App, error) {
	if err := lab.Apply(ctx, Objects()...); err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	app := &App{Lab: lab, pods: map[string][]Pod{}}
	for _, w := range Workloads {
		pods, err := lab.WaitPodsReady(ctx, Namespace, "app="+w.Name, int(w.Replicas))
		if err != nil {
			return nil, fmt.Errorf("scenario: %w", err)
		}
		for i := range pods {
			np := lab.Pod(pods[i].Namespace, pods[i].Name)
			if np == nil {
				return nil, fmt.Errorf("scenario: pod %s/%s is ready but lost its node side", pods[i].Namespace, pods[i].Name)
			}
			app.pods[w.Name] = append(app.pods[w.Name], Pod{API: &pods[i], Net: np})
		}
	}
	return app, nil
}

// Pods returns the pods of one workload (nil for an unknown name).
func (a *App) Pods(workload string) []Pod { return a.pods[workload] }

// CrawlerPod returns the crawler's single pod.
func (a *App) CrawlerPod() Pod { return a.pods[Crawler][0] }

// NormalPods returns every pod but the crawler's, sorted by workload then name: the sources of
// light, normal DNS traffic.
func (a *App) NormalPods() []Pod {
	var out []Pod
	names := make([]string, 0, len(a.pods))
	for n := range a.pods {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if n != Crawler {
			out = append(out, a.pods[n]...)
		}
	}
	return out
}

// AllPods returns every app pod, sorted by workload then name.
func (a *App) AllPods() []Pod {
	return append(a.NormalPods(), a.pods[Crawler]...)
}

// ServiceNames are the cluster DNS names of the app's Services (what normal traffic resolves).
func ServiceNames(clusterDomain string) []string {
	if clusterDomain == "" {
		clusterDomain = "cluster.local"
	}
	out := make([]string, len(Workloads))
	for i, w := range Workloads {
		out[i] = fmt.Sprintf("%s.%s.svc.%s.", w.Name, Namespace, clusterDomain)
	}
	return out
}
