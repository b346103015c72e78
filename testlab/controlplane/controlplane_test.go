package controlplane

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func startForTest(t *testing.T) *ControlPlane {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	return cp
}

func TestPatchPodReadyKeepsLabIPs(t *testing.T) {
	doc, err := os.ReadFile(cachedBinaries().KwokStages + "/pod/fast/pod-ready.yaml")
	if err != nil {
		t.Skipf("kwok stages not built yet (testlab/scripts/build-bins.sh kwok): %v", err)
	}
	out, err := patchPodReady(string(doc))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "PodIPsWith") || strings.Contains(out, "podIPs:") {
		t.Errorf("patched stage still writes pod IPs:\n%s", out)
	}
	if !strings.Contains(out, "key: '.status.podIP'\n      operator: 'Exists'") {
		t.Errorf("patched stage does not wait for status.podIP:\n%s", out)
	}
	if !strings.Contains(out, "hostIP:") || !strings.Contains(out, "phase: Running") {
		t.Errorf("patched stage lost the rest of the template:\n%s", out)
	}
	if _, err := patchPodReady("kind: Stage\n"); err == nil {
		t.Error("patching an unexpected document must fail")
	}
}

// TestControlPlane covers version, RBAC of the restricted user, kwok nodes and a Deployment whose
// pods are scheduled and — once something sets status.podIP, as the lab's adopter does — Running.
func TestControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane: not under -short (make unit)")
	}
	start := time.Now()
	cp := startForTest(t)
	t.Logf("control plane ready in %v", time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := cp.Client()

	v, err := client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != K8sVersion {
		t.Errorf("server version %q, want %q", v.GitVersion, K8sVersion)
	}

	// The kubeconfig files work on their own.
	for _, path := range []string{cp.Kubeconfig, cp.RestrictedKubeconfig} {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		c, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("list namespaces with %s: %v", path, err)
		}
	}

	restricted, err := kubernetes.NewForConfig(cp.RestrictedRESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Run("restricted user", func(t *testing.T) {
		if _, err := restricted.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("restricted user cannot list pods: %v", err)
		}
		// A port-forward is a POST to pods/portforward; RBAC answers before looking for the pod.
		err := restricted.CoreV1().RESTClient().Post().Namespace("default").Resource("pods").Name("any").
			SubResource("portforward").Do(ctx).Error()
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `"pods/portforward"`) {
			t.Errorf("port-forward as restricted user: got %v, want Forbidden naming pods/portforward", err)
		}
		for _, sub := range []string{"exec"} {
			err := restricted.CoreV1().RESTClient().Post().Namespace("default").Resource("pods").Name("any").
				SubResource(sub).Do(ctx).Error()
			if !apierrors.IsForbidden(err) {
				t.Errorf("pods/%s as restricted user: got %v, want Forbidden", sub, err)
			}
		}
		if _, err := restricted.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("list secrets as restricted user: got %v, want Forbidden", err)
		}
	})

	// Two kwok nodes.
	for i, name := range []string{"cp-node-a", "cp-node-b"} {
		v4 := netip.MustParsePrefix("10.250." + string(rune('1'+i)) + ".0/24")
		node, err := cp.AddNode(ctx, name, v4)
		if err != nil {
			t.Fatal(err)
		}
		if node.Spec.PodCIDR != v4.String() {
			t.Errorf("node %s podCIDR %q, want %s", name, node.Spec.PodCIDR, v4)
		}
	}

	// A Deployment: controller-manager makes the ReplicaSet and pods, the scheduler binds them.
	replicas := int32(4)
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "registry.k8s.io/pause:3.10"}}},
			},
		},
	}
	if _, err := client.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pods []corev1.Pod
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		list, err := client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false, nil
		}
		pods = list.Items
		bound := 0
		for _, p := range pods {
			if p.Spec.NodeName != "" {
				bound++
			}
		}
		return bound == int(replicas), nil
	})
	if err != nil {
		t.Fatalf("deployment pods not scheduled: %v (have %d pods); see %s", err, len(pods), cp.Dir)
	}
	// Without an IP, kwok must leave them Pending: the lab owns pod IPs. Rather than wait a
	// guessed time, a sentinel pod bound after them gets an IP at once: when kwok has made it
	// Running, it has handled the web pods' events before it (one watch, in order).
	sentinel := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "sentinel", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: pods[0].Spec.NodeName, Containers: []corev1.Container{{Name: "s", Image: "registry.k8s.io/pause:3.10"}}}}
	if _, err := client.CoreV1().Pods("default").Create(ctx, sentinel, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ipPatch := []byte(`{"status":{"podIP":"10.250.9.99","podIPs":[{"ip":"10.250.9.99"}]}}`)
	if _, err := client.CoreV1().Pods("default").Patch(ctx, "sentinel", "application/merge-patch+json", ipPatch, metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods("default").Get(ctx, "sentinel", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning, nil
	})
	if err != nil {
		t.Fatalf("kwok did not run the sentinel pod with an IP: %v; see kwok.log in %s", err, cp.Dir)
	}
	list, _ := client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	for _, p := range list.Items {
		if p.Status.Phase != corev1.PodPending || p.Status.PodIP != "" {
			t.Errorf("pod %s without lab IP: phase %s podIP %q, want Pending and no IP", p.Name, p.Status.Phase, p.Status.PodIP)
		}
	}
	// Set IPs as the adopter does; kwok then marks them Running and keeps the IPs.
	want := map[string]string{}
	for i, p := range list.Items {
		ip := "10.250.9." + string(rune('2'+i))
		want[p.Name] = ip
		patch := []byte(`{"status":{"podIP":"` + ip + `","podIPs":[{"ip":"` + ip + `"}]}}`)
		if _, err := client.CoreV1().Pods("default").Patch(ctx, p.Name, "application/merge-patch+json", patch, metav1.PatchOptions{}, "status"); err != nil {
			t.Fatal(err)
		}
	}
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		list, err := client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false, nil
		}
		for _, p := range list.Items {
			if p.Status.Phase != corev1.PodRunning {
				return false, nil
			}
		}
		pods = list.Items
		return true, nil
	})
	if err != nil {
		t.Fatalf("pods not Running after the IPs were set: %v; see kwok.log in %s", err, cp.Dir)
	}
	for _, p := range pods {
		if p.Status.PodIP != want[p.Name] || len(p.Status.PodIPs) != 1 || p.Status.PodIPs[0].IP != want[p.Name] {
			t.Errorf("pod %s: podIP %q podIPs %v, want %s (kwok must not replace lab IPs)", p.Name, p.Status.PodIP, p.Status.PodIPs, want[p.Name])
		}
	}

	// The controller-manager's token controller signs legacy service-account token Secrets.
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "default-token", Namespace: "default",
			Annotations: map[string]string{corev1.ServiceAccountNameKey: "default"}},
		Type: corev1.SecretTypeServiceAccountToken,
	}
	if _, err := client.CoreV1().Secrets("default").Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		s, err := client.CoreV1().Secrets("default").Get(ctx, "default-token", metav1.GetOptions{})
		return err == nil && len(s.Data[corev1.ServiceAccountTokenKey]) > 0, nil
	})
	if err != nil {
		t.Errorf("service-account token secret never filled: %v", err)
	}

	// Stop leaves no process and no data dir.
	pids := cp.Pids()
	if len(pids) != 5 {
		t.Errorf("running components %v, want 5", pids)
	}
	cp.Stop()
	for name, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("%s (pid %d) still alive after Stop", name, pid)
		}
	}
	if _, err := os.Stat(cp.Dir); !os.IsNotExist(err) {
		t.Errorf("data dir %s still exists after Stop (err %v)", cp.Dir, err)
	}
}

// A component that dies at start is named in the error, with its log, and nothing is left.
func TestStartReportsDeadComponent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane: not under -short (make unit)")
	}
	bins, err := EnsureBinaries()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "fake-apiserver")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'E1124 flag --bogus: unknown flag' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	bins.APIServer = script
	dir := filepath.Join(t.TempDir(), "cp")
	_, err = Start(context.Background(), Options{Binaries: &bins, Dir: dir})
	if err == nil {
		t.Fatal("Start succeeded with an apiserver that exits")
	}
	for _, want := range []string{"kube-apiserver exited during start", "exit status 3", "unknown flag", "kube-apiserver.log"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if _, serr := os.Stat(dir); !os.IsNotExist(serr) {
		t.Errorf("data dir %s left after failed start", dir)
	}
	// etcd was started before the apiserver and must be gone.
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if data, err := os.ReadFile(p); err == nil && strings.Contains(string(data), dir) {
			t.Errorf("process left after failed start: %s", strings.ReplaceAll(string(data), "\x00", " "))
		}
	}
}
