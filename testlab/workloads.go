package testlab

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// podTemplate is a one-container pause pod labelled app=<name>.
func podTemplate(name string, labels map[string]string) corev1.PodTemplateSpec {
	grace := int64(0)
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{
			Containers:                    []corev1.Container{{Name: name, Image: PauseImage}},
			TerminationGracePeriodSeconds: &grace,
		},
	}
}

// NewDeployment returns a Deployment of pause pods labelled app=<name> whose replicas are spread
// evenly over the nodes (topology spread on kubernetes.io/hostname, maxSkew 1).
func NewDeployment(namespace, name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	tmpl := podTemplate(name, labels)
	tmpl.Spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{
		MaxSkew:           1,
		TopologyKey:       corev1.LabelHostname,
		WhenUnsatisfiable: corev1.DoNotSchedule,
		LabelSelector:     &metav1.LabelSelector{MatchLabels: labels},
	}}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: tmpl,
		},
	}
}

// NewDaemonSet returns a DaemonSet of pause pods labelled app=<name> (one pod per node).
func NewDaemonSet(namespace, name string) *appsv1.DaemonSet {
	labels := map[string]string{"app": name}
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: podTemplate(name, labels),
		},
	}
}

// Apply creates (or replaces the spec of) Deployments, DaemonSets, Services, ServiceAccounts,
// ConfigMaps and Namespaces, creating namespaces as needed.
func (l *Lab) Apply(ctx context.Context, objs ...any) error {
	c := l.Client()
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *corev1.Namespace:
			err = l.EnsureNamespace(ctx, o.Name)
		case *appsv1.Deployment:
			if err = l.EnsureNamespace(ctx, o.Namespace); err == nil {
				_, err = c.AppsV1().Deployments(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
				if apierrors.IsAlreadyExists(err) {
					_, err = c.AppsV1().Deployments(o.Namespace).Update(ctx, o, metav1.UpdateOptions{})
				}
			}
		case *appsv1.DaemonSet:
			if err = l.EnsureNamespace(ctx, o.Namespace); err == nil {
				_, err = c.AppsV1().DaemonSets(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
				if apierrors.IsAlreadyExists(err) {
					_, err = c.AppsV1().DaemonSets(o.Namespace).Update(ctx, o, metav1.UpdateOptions{})
				}
			}
		case *corev1.Service:
			if err = l.EnsureNamespace(ctx, o.Namespace); err == nil {
				_, err = c.CoreV1().Services(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
				if apierrors.IsAlreadyExists(err) {
					err = nil // Services are immutable enough here; keep the existing ClusterIP
				}
			}
		case *corev1.ServiceAccount:
			if err = l.EnsureNamespace(ctx, o.Namespace); err == nil {
				_, err = c.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
				if apierrors.IsAlreadyExists(err) {
					err = nil
				}
			}
		case *corev1.ConfigMap:
			if err = l.EnsureNamespace(ctx, o.Namespace); err == nil {
				_, err = c.CoreV1().ConfigMaps(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
				if apierrors.IsAlreadyExists(err) {
					_, err = c.CoreV1().ConfigMaps(o.Namespace).Update(ctx, o, metav1.UpdateOptions{})
				}
			}
		default:
			return fmt.Errorf("Lab.Apply: unsupported object type %T", o)
		}
		if err != nil {
			return fmt.Errorf("apply %T: %w", o, err)
		}
	}
	return nil
}

func resourceMust(s string) resource.Quantity { return resource.MustParse(s) }
