package controlplane

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

// kwokPortForwardCRD lets tests create kwok PortForward objects: kwok (run with
// --enable-crds=PortForward) then answers `kubectl port-forward` to a lab pod by
// connecting to the object's target address, e.g. a daemon process on this host.
//
//go:embed kwok-portforwards-crd.yaml
var kwokPortForwardCRD []byte

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// installKwokCRDs creates kwok's PortForward CRD and waits until it is
// established, so kwok's watch on it starts cleanly.
func (cp *ControlPlane) installKwokCRDs(ctx context.Context) error {
	var obj map[string]any
	if err := yaml.Unmarshal(kwokPortForwardCRD, &obj); err != nil {
		return fmt.Errorf("kwok PortForward CRD: %w", err)
	}
	crd := &unstructured.Unstructured{Object: obj}
	client, err := dynamic.NewForConfig(cp.RESTConfig())
	if err != nil {
		return err
	}
	crds := client.Resource(crdResource)
	if _, err := crds.Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create CRD %s: %w", crd.GetName(), err)
	}
	return wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := crds.Get(ctx, crd.GetName(), metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
}

var portForwardResource = schema.GroupVersionResource{Group: "kwok.x-k8s.io", Version: "v1alpha1", Resource: "portforwards"}

// ForwardPodPort makes port-forwards to the pod's port (through the API server,
// as `kubectl port-forward` does) reach target, a host:port on this host. The
// object is named after the pod; calling again replaces its target. kwok picks
// it up from its watch within a moment.
func (cp *ControlPlane) ForwardPodPort(ctx context.Context, namespace, pod string, port int32, targetHost string, targetPort int32) error {
	client, err := dynamic.NewForConfig(cp.RESTConfig())
	if err != nil {
		return err
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kwok.x-k8s.io/v1alpha1",
		"kind":       "PortForward",
		"metadata":   map[string]any{"name": pod, "namespace": namespace},
		"spec": map[string]any{"forwards": []any{map[string]any{
			"ports":  []any{int64(port)},
			"target": map[string]any{"address": targetHost, "port": int64(targetPort)},
		}}},
	}}
	// Owned by its pod: it goes with the pod, and nothing treats it as an object of its own
	// (uninstall keeps a namespace holding objects isoobs did not create, and skips owned ones).
	if p, err := cp.client.CoreV1().Pods(namespace).Get(ctx, pod, metav1.GetOptions{}); err == nil {
		obj.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: p.Name, UID: p.UID}})
	}
	pfs := client.Resource(portForwardResource).Namespace(namespace)
	_, err = pfs.Create(ctx, obj, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		var old *unstructured.Unstructured
		if old, err = pfs.Get(ctx, pod, metav1.GetOptions{}); err == nil {
			obj.SetResourceVersion(old.GetResourceVersion())
			_, err = pfs.Update(ctx, obj, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		return fmt.Errorf("kwok PortForward %s/%s: %w", namespace, pod, err)
	}
	return nil
}
