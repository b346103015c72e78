package install

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"

	"github.com/isoobs/isoobs/deploy"

	"github.com/isoobs/isoobs/install/values"
	"github.com/isoobs/isoobs/testlab/controlplane"
)

// securityControlPlane is a bare lab control plane (no pod network: nothing here runs a
// daemon process) with one kwok node, and an installer on its admin kubeconfig.
func securityControlPlane(t *testing.T, opts controlplane.Options) (*controlplane.ControlPlane, *Installer, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	if _, err := cp.AddNode(ctx, "sec-a"); err != nil {
		t.Fatal(err)
	}
	flags := genericclioptions.NewConfigFlags(false)
	kc := cp.Kubeconfig
	flags.KubeConfig = &kc
	out := &syncBuffer{}
	inst, err := New(flags, out)
	if err != nil {
		t.Fatal(err)
	}
	inst.pollInterval = 200 * time.Millisecond
	return cp, inst, out
}

func isoobsOnly() Options {
	return Options{Values: values.Defaults(), Components: []Component{ComponentIsoobs}, Sources: map[Component]Source{},
		KubeVersion: controlplane.K8sVersion, HubbleAddressAuto: true}
}

// On a cluster whose PodSecurity admission enforces baseline by default, the daemon's pod is
// refused in an unlabeled namespace and admitted in the isoobs namespace install creates.
func TestLabDaemonAdmittedWhereBaselineIsEnforced(t *testing.T) {
	if testing.Short() {
		t.Skip("the lab: not under -short (make unit)")
	}
	cp, inst, out := securityControlPlane(t, controlplane.Options{PodSecurityDefault: "baseline"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := cp.Client()

	// The lab really enforces baseline: the daemon's own pod spec is refused elsewhere.
	o := isoobsOnly()
	o.Values.HubbleAddress = "off"
	ch, err := deploy.Chart()
	if err != nil {
		t.Fatal(err)
	}
	ds := Find(renderComponent(t, ComponentIsoobs, o.Values, nil, ch), "DaemonSet", "isoobs")
	tmpl, _ := ds.Object["spec"].(map[string]any)["template"].(map[string]any)
	pod := &corev1.Pod{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(tmpl, pod); err != nil {
		t.Fatal(err)
	}
	pod.Name, pod.Spec.NodeName = "daemon-elsewhere", "sec-a"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tenant"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod.Spec.ServiceAccountName = ""
	_, err = cs.CoreV1().Pods("tenant").Create(ctx, pod, metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), `violates PodSecurity "baseline`) {
		t.Fatalf("the daemon's pod in an unlabeled namespace: err = %v, want a baseline violation (is the lab enforcing baseline?)", err)
	}
	t.Logf("refused elsewhere: %v", err)

	if _, err := inst.Install(ctx, isoobsOnly()); err != nil {
		t.Fatal(err)
	}
	t.Logf("install:\n%s", out.take())
	ns, err := cs.CoreV1().Namespaces().Get(ctx, values.NamespaceIsoobs, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ns.Labels[LabelPodSecurityEnforce] != "privileged" {
		t.Errorf("namespace %s labels %v, want %s=privileged", ns.Name, ns.Labels, LabelPodSecurityEnforce)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		pods, err := cs.CoreV1().Pods(values.NamespaceIsoobs).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) == 1 {
			t.Logf("daemon pod %s admitted", pods.Items[0].Name)
			break
		}
		evs, _ := cs.CoreV1().Events(values.NamespaceIsoobs).List(ctx, metav1.ListOptions{FieldSelector: "reason=FailedCreate"})
		if evs != nil && len(evs.Items) > 0 {
			t.Fatalf("the DaemonSet's pod was refused: %s", evs.Items[0].Message)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no daemon pod after 90 s (%d pods)", len(pods.Items))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Item 7: a Splunk collector installed by its own docs keeps its access token in the release's
// values. Neither the refusal's values diff, nor --show-values, nor --dry-run shows it, nor
// the token isoobs was given, nor a password the user set.
func TestLabForeignReleaseTokenRedacted(t *testing.T) {
	if testing.Short() {
		t.Skip("the lab: not under -short (make unit)")
	}
	_, inst, out := securityControlPlane(t, controlplane.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg, err := inst.helmConfig(values.NamespaceSplunk)
	if err != nil {
		t.Fatal(err)
	}
	foreign := action.NewInstall(cfg)
	foreign.ReleaseName, foreign.Namespace, foreign.CreateNamespace = "splunk-otel-collector", values.NamespaceSplunk, true
	// As `helm install --set splunkObservability.accessToken=...` (Splunk's docs) stores it.
	theirs := map[string]any{
		"clusterName":         "theirs",
		"splunkObservability": map[string]any{"accessToken": theirToken, "realm": "us0"},
		"secret":              map[string]any{"create": true, "name": "their-token-secret"},
		"agent": map[string]any{"config": map[string]any{"exporters": map[string]any{
			"signalfx": map[string]any{"access_token": "exporter-tok-77"}}}},
	}
	if _, err := foreign.RunWithContext(ctx, loadDir(t, filepath.Join("testdata", "splunk-otel-collector")), theirs); err != nil {
		t.Fatal(err)
	}
	o := isoobsOnly()
	o.Values.Pipeline, o.Values.Splunk.Realm = values.PipelineSplunk, "us1"
	o.Components = []Component{ComponentSplunk}
	o.Sources = map[Component]Source{ComponentSplunk: {Dir: filepath.Join("testdata", "splunk-otel-collector")}}
	o.SplunkToken = testToken
	o.Overrides = Overrides{ComponentSplunk: {"splunkPlatform": map[string]any{"password": "user-set-passw0rd"}}}
	secrets := []string{theirToken, "exporter-tok-77", testToken, "user-set-passw0rd"}

	_, err = inst.Install(ctx, o)
	if err == nil {
		t.Fatal("install over a foreign release succeeded without --adopt")
	}
	msg := err.Error() + out.take()
	t.Logf("refusal:\n%s", msg)
	for _, s := range secrets {
		if strings.Contains(msg, s) {
			t.Errorf("the refusal shows %q", s)
		}
	}
	for _, want := range []string{"already installed by someone else", "accessToken: " + Redacted, "-clusterName: theirs",
		"+  password: " + Redacted, "secret values that differ (not shown): secret.name"} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal lacks %q", want)
		}
	}

	o.Adopt, o.DryRun, o.ShowValues = true, true, true
	if _, err := inst.Install(ctx, o); err != nil {
		t.Fatal(err)
	}
	dry := out.take()
	for _, s := range secrets {
		if strings.Contains(dry, s) {
			t.Errorf("--show-values --dry-run shows %q", s)
		}
	}
	for _, want := range []string{"password: " + Redacted, "kind: ConfigMap", "kind: DaemonSet"} {
		if !strings.Contains(dry, want) {
			t.Errorf("--show-values --dry-run lacks %q:\n%s", want, dry)
		}
	}
}

// Item 8: uninstall never deletes a namespace holding objects isoobs did not create, and says
// what it left and why; once they are gone, the next uninstall removes the namespace.
func TestLabUninstallKeepsNamespaceWithUserObjects(t *testing.T) {
	if testing.Short() {
		t.Skip("the lab: not under -short (make unit)")
	}
	cp, inst, out := securityControlPlane(t, controlplane.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := cp.Client()
	if _, err := inst.Install(ctx, isoobsOnly()); err != nil {
		t.Fatal(err)
	}
	out.take()
	user := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "user-notes", Namespace: values.NamespaceIsoobs}, Data: map[string]string{"k": "v"}}
	if _, err := cs.CoreV1().ConfigMaps(values.NamespaceIsoobs).Create(ctx, user, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The dry run says the same.
	if _, err := inst.Uninstall(ctx, UninstallOptions{DryRun: true}); err != nil {
		t.Fatal(err)
	}
	dry := out.take()
	removed, err := inst.Uninstall(ctx, UninstallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	text := out.take()
	t.Logf("uninstall:\n%s", text)
	want := "namespace isoobs: left in place: it holds 1 object(s) isoobs did not create: configmaps/user-notes"
	for name, got := range map[string]string{"dry run": dry, "uninstall": text} {
		if !strings.Contains(got, want) {
			t.Errorf("%s does not say %q:\n%s", name, want, got)
		}
	}
	if slices.Contains(removed, "namespace isoobs") {
		t.Errorf("removed %v includes the namespace", removed)
	}
	if !slices.Contains(removed, "release isoobs/isoobs") {
		t.Errorf("removed %v lacks the release", removed)
	}
	if _, err := cs.CoreV1().ConfigMaps(values.NamespaceIsoobs).Get(ctx, "user-notes", metav1.GetOptions{}); err != nil {
		t.Fatalf("the user's ConfigMap did not survive uninstall: %v", err)
	}
	if ns, err := cs.CoreV1().Namespaces().Get(ctx, values.NamespaceIsoobs, metav1.GetOptions{}); err != nil || ns.DeletionTimestamp != nil {
		t.Fatalf("namespace isoobs deleted: %v %v", err, ns)
	}
	if _, err := cs.AppsV1().DaemonSets(values.NamespaceIsoobs).Get(ctx, "isoobs", metav1.GetOptions{}); err == nil {
		t.Error("the DaemonSet survived uninstall")
	}

	if err := cs.CoreV1().ConfigMaps(values.NamespaceIsoobs).Delete(ctx, "user-notes", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	removed, err = inst.Uninstall(ctx, UninstallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(removed, "namespace isoobs") {
		t.Errorf("second uninstall: removed %v, want the now empty namespace:\n%s", removed, out.take())
	}
}
