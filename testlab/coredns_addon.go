package testlab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/isoobs/isoobs/testlab/coredns"
)

// DNS objects, named as kubeadm names them so tools looking for cluster DNS find it.
const (
	DNSNamespace   = "kube-system"
	DNSDeployment  = "coredns"
	DNSServiceName = "kube-dns"
	DNSAppLabel    = "kube-dns" // k8s-app=kube-dns
)

// DNSObjects returns the kube-system/coredns Deployment (one replica) and the kube-dns Service
// with the lab's fixed ClusterIP.
func (l *Lab) DNSObjects() (*appsv1.Deployment, *corev1.Service) {
	labels := map[string]string{"k8s-app": DNSAppLabel}
	one := int32(1)
	tmpl := podTemplate(DNSDeployment, labels)
	tmpl.Spec.Containers[0].Image = "registry.k8s.io/coredns/coredns:" + coredns.Version
	tmpl.Spec.Containers[0].Ports = []corev1.ContainerPort{
		{Name: "dns", ContainerPort: coredns.DNSPort, Protocol: corev1.ProtocolUDP},
		{Name: "dns-tcp", ContainerPort: coredns.DNSPort, Protocol: corev1.ProtocolTCP},
		{Name: "metrics", ContainerPort: coredns.MetricsPort, Protocol: corev1.ProtocolTCP},
	}
	// Guaranteed QoS, as a real cluster DNS would be sized.
	tmpl.Spec.Containers[0].Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resourceMust("100m"), corev1.ResourceMemory: resourceMust("170Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resourceMust("100m"), corev1.ResourceMemory: resourceMust("170Mi")},
	}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: DNSNamespace, Name: DNSDeployment, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: tmpl,
		},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: DNSNamespace, Name: DNSServiceName, Labels: labels},
		Spec: corev1.ServiceSpec{
			Selector:  labels,
			ClusterIP: l.DNSServiceIP.String(),
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
				{Name: "metrics", Port: coredns.MetricsPort, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(coredns.MetricsPort)},
			},
		},
	}
	return dep, svc
}

// startCoreDNS creates the coredns Deployment and kube-dns Service, waits for the adopter to give
// the pod its netns, and runs the real CoreDNS inside it, answering on the pod IPs and the
// kube-dns ClusterIP (routed to the pod, since the lab has no kube-proxy). CoreDNS's
// kubernetes plugin watches this lab's API server. The process belongs to the pod: if the pod is
// deleted, CoreDNS stops with it (the lab does not restart it).
func (l *Lab) startCoreDNS(ctx context.Context) error {
	dep, svc := l.DNSObjects()
	if err := l.Apply(ctx, dep, svc); err != nil {
		return fmt.Errorf("cluster DNS: %w", err)
	}
	pods, err := l.WaitPodsReady(ctx, DNSNamespace, "k8s-app="+DNSAppLabel, 1)
	if err != nil {
		return fmt.Errorf("cluster DNS: %w", err)
	}
	np := l.Pod(pods[0].Namespace, pods[0].Name)
	dir := ""
	if l.opts.Dir != "" {
		dir = filepath.Join(l.opts.Dir, "coredns")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cluster DNS: %w", err)
		}
	}
	srv, err := coredns.Start(ctx, np, coredns.Options{
		Kubeconfig: l.CP.Kubeconfig,
		ClusterIPs: []netip.Addr{l.DNSServiceIP},
		Dir:        dir,
	})
	if err != nil {
		return fmt.Errorf("cluster DNS: %w", err)
	}
	l.DNS = srv
	l.extras = append(l.extras, srv.Stop)
	return nil
}
