package install

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/isoobs/isoobs/install/values"
)

// The daemon's Hubble socket is only mounted where Cilium runs (found by the agent DaemonSet's
// label in any namespace) and keeps its socket in a directory of its own (cilium-config).
func TestCiliumHubbleSocket(t *testing.T) {
	def := values.Defaults().HubbleAddress
	other := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "kube-proxy"}}}
	cilium := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "cilium", Namespace: "cilium-system", Labels: map[string]string{"k8s-app": "cilium"}}}
	config := func(data map[string]string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cilium-config", Namespace: "cilium-system"}, Data: data}
	}
	for _, tc := range []struct {
		name   string
		objs   []runtime.Object
		want   string
		whyHas string
	}{
		{"empty cluster", nil, "off", "no Cilium in this cluster"},
		{"kube-proxy only", []runtime.Object{other}, "off", "no Cilium in this cluster"},
		{"cilium-config unreadable", []runtime.Object{other, cilium}, def, ""},
		{"Cilium's default socket", []runtime.Object{cilium, config(map[string]string{"enable-hubble": "true"})}, "off", "beside cilium.sock"},
		{"socket in /run/cilium", []runtime.Object{cilium, config(map[string]string{"hubble-socket-path": "/run/cilium/hubble.sock"})}, "off", "hubble.socketPath=" + values.HubbleSocketPath},
		{"Hubble disabled", []runtime.Object{cilium, config(map[string]string{"enable-hubble": "false"})}, "off", "Hubble disabled"},
		{"socket of its own", []runtime.Object{cilium, config(map[string]string{"hubble-socket-path": values.HubbleSocketPath})}, "unix://" + values.HubbleSocketPath, "mount its directory only"},
		{"elsewhere", []runtime.Object{cilium, config(map[string]string{"hubble-socket-path": "/run/hubble/h.sock"})}, "unix:///run/hubble/h.sock", "mount its directory only"},
	} {
		got, why := (&Installer{client: fake.NewClientset(tc.objs...)}).ciliumHubbleSocket(context.Background(), def)
		if got != tc.want || !strings.Contains(why, tc.whyHas) {
			t.Errorf("%s: %q (%s), want %q (…%s…)", tc.name, got, why, tc.want, tc.whyHas)
		}
	}
}

func TestCiliumRunDirExposed(t *testing.T) {
	for dir, want := range map[string]bool{
		"/": true, "/var": true, "/var/run": true, "/run": true, "/var/run/cilium": true, "/run/cilium/": true,
		"/var/run/cilium/hubble": true, "/run/cilium/state": true, "/var/run/cilium/envoy": true,
		values.HubbleSocketDir: false, "/run/hubble": false, "/run/isoobs": false, "/sys/fs/cgroup": false, "/var/lib": false,
	} {
		if got := CiliumRunDirExposed(dir); got != want {
			t.Errorf("CiliumRunDirExposed(%s) = %v, want %v", dir, got, want)
		}
	}
}
