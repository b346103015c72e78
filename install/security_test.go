package install

import (
	"context"
	"path"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/isoobs/isoobs/deploy"
	"github.com/isoobs/isoobs/install/values"
)

// ciliumRunDir is what a cilium-agent keeps in /var/run/cilium (v1.20): its API, the monitor,
// health, DNS proxy and Envoy sockets, its state. None of it may be reachable from the daemon's pod.
var ciliumRunDir = []string{
	"/var/run/cilium/cilium.sock", "/var/run/cilium/monitor1_2.sock", "/var/run/cilium/health.sock",
	"/var/run/cilium/access_log.sock", "/var/run/cilium/envoy/sockets/xds.sock", "/var/run/cilium/envoy/sockets/admin.sock",
	"/var/run/cilium/state/globals/node_config.h", "/var/run/cilium/hubble/events.log", "/var/run/cilium/hubble.sock",
	"/run/cilium/cilium.sock",
}

// reachable says whether file is inside one of the hostPaths (/var/run and /run are one directory).
func reachable(hostPaths []string, file string) bool {
	norm := func(p string) string {
		p = path.Clean(p)
		if p == "/var/run" || strings.HasPrefix(p, "/var/run/") {
			p = "/run" + strings.TrimPrefix(p, "/var/run")
		}
		return p
	}
	f := norm(file)
	for _, hp := range hostPaths {
		h := norm(hp)
		if f == h || strings.HasPrefix(f, strings.TrimSuffix(h, "/")+"/") {
			return true
		}
	}
	return false
}

func podHostPaths(t *testing.T, objs []Manifest) []string {
	t.Helper()
	ds := Find(objs, "DaemonSet", "isoobs")
	if ds == nil {
		t.Fatal("no DaemonSet")
	}
	spec := ds.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	var out []string
	for _, v := range spec["volumes"].([]any) {
		if hp, ok := v.(map[string]any)["hostPath"].(map[string]any); ok {
			out = append(out, hp["path"].(string))
		}
	}
	return out
}

// Item 2: only Hubble's socket directory is mounted, nothing else of Cilium's run directory.
func TestDaemonChartMountsOnlyHubblesSocket(t *testing.T) {
	ch, err := deploy.Chart()
	if err != nil {
		t.Fatal(err)
	}
	o := values.Defaults()
	paths := podHostPaths(t, renderComponent(t, ComponentIsoobs, o, nil, ch))
	for _, f := range ciliumRunDir {
		if reachable(paths, f) {
			t.Errorf("%s is reachable from the daemon's pod (hostPaths %v)", f, paths)
		}
	}
	if !reachable(paths, values.HubbleSocketPath) {
		t.Errorf("Hubble's socket %s is not reachable (hostPaths %v)", values.HubbleSocketPath, paths)
	}
	// The daemon's socket is where the chart tells the daemon to look, and Cilium (as isoobs
	// installs it) puts it there.
	if o.HubbleAddress != "unix://"+values.HubbleSocketPath {
		t.Errorf("default hubble address %s", o.HubbleAddress)
	}
	cil := values.Cilium(o)
	if got := cil["hubble"].(map[string]any)["socketPath"]; got != values.HubbleSocketPath {
		t.Errorf("cilium hubble.socketPath = %v, want %s", got, values.HubbleSocketPath)
	}

	// The Cilium agent isoobs installs listens there, in a directory its pod creates.
	cobjs := renderComponent(t, ComponentCilium, o, nil, loadDir(t, ciliumChartDir(t)))
	if got := configMapData(t, cobjs, "cilium-config")["hubble-socket-path"]; got != values.HubbleSocketPath {
		t.Errorf("cilium-config hubble-socket-path = %q, want %s", got, values.HubbleSocketPath)
	}
	agent := Find(cobjs, "DaemonSet", "cilium")
	if agent == nil {
		t.Fatal("no cilium DaemonSet")
	}
	found := false
	for _, v := range agent.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["volumes"].([]any) {
		if hp, ok := v.(map[string]any)["hostPath"].(map[string]any); ok && hp["path"] == values.HubbleSocketDir && hp["type"] == "DirectoryOrCreate" {
			found = true
		}
	}
	if !found {
		t.Errorf("the cilium agent's pod does not create %s (hostPath DirectoryOrCreate): Cilium does not create the socket's directory", values.HubbleSocketDir)
	}

	// Overrides that would reach Cilium's run directory fail the render, naming the value.
	for _, tc := range []struct{ key, val string }{
		{"hubble.address", "unix:///var/run/cilium/hubble.sock"},
		{"hubble.address", "unix:///run/cilium/hubble.sock"},
		{"hubble.address", "unix:///var/run/hubble.sock"},
		{"hubble.address", "unix:///var/run/cilium/hubble/x.sock"},
		{"hubble.address", "unix:///hubble.sock"},
		{"hostPaths.runDir", "/var/run"},
		{"hostPaths.runDir", "/run/cilium"},
		{"hostPaths.cgroup", "/"},
	} {
		vals, err := FinalValues(ComponentIsoobs, o, Overrides{ComponentIsoobs: setPath(tc.key, tc.val)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = Render(ch, Specs(o.Edition)[ComponentIsoobs], vals, "", nil)
		if err == nil || !strings.Contains(err.Error(), "cilium.sock") {
			t.Errorf("%s=%s: render err = %v, want a refusal", tc.key, tc.val, err)
		}
	}
	// A socket directory of its own elsewhere is fine.
	vals, _ := FinalValues(ComponentIsoobs, o, Overrides{ComponentIsoobs: setPath("hubble.address", "unix:///run/hubble-only/hubble.sock")})
	if _, err := Render(ch, Specs(o.Edition)[ComponentIsoobs], vals, "", nil); err != nil {
		t.Errorf("a dedicated socket directory: %v", err)
	}
}

func setPath(key, val string) map[string]any {
	parts := strings.Split(key, ".")
	m := map[string]any{parts[len(parts)-1]: val}
	for i := len(parts) - 2; i >= 0; i-- {
		m = map[string]any{parts[i]: m}
	}
	return m
}

// Item 3: the ClusterRole is exactly what the daemon's informer uses.
func TestDaemonChartRBACIsPodsOnly(t *testing.T) {
	ch, err := deploy.Chart()
	if err != nil {
		t.Fatal(err)
	}
	objs := renderComponent(t, ComponentIsoobs, values.Defaults(), nil, ch)
	role := Find(objs, "ClusterRole", "isoobs")
	if role == nil {
		t.Fatal("no ClusterRole")
	}
	rules := role.Object["rules"].([]any)
	if len(rules) != 1 {
		t.Fatalf("rules = %v, want one", rules)
	}
	r := rules[0].(map[string]any)
	if !slices.Equal(r["apiGroups"].([]any), []any{""}) || !slices.Equal(r["resources"].([]any), []any{"pods"}) ||
		!slices.Equal(r["verbs"].([]any), []any{"get", "list", "watch"}) {
		t.Errorf("rule = %v, want get/list/watch on core pods only", r)
	}
	sa := Find(objs, "ServiceAccount", "isoobs")
	if sa == nil || sa.Object["automountServiceAccountToken"] != true {
		t.Errorf("ServiceAccount %v: the daemon needs its token mounted", sa)
	}
}

// Item 3: an existing namespace without a Pod Security label is labeled privileged (and says
// so); one whose administrator chose another level is refused, not lowered.
func TestEnsureNamespacePodSecurity(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewSimpleClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: values.NamespaceIsoobs, Labels: map[string]string{"team": "obs"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: values.NamespaceTetragon, Labels: map[string]string{LabelPodSecurityEnforce: "baseline"}}},
	)
	out := &strings.Builder{}
	inst := &Installer{client: cs, out: out}
	if err := inst.ensureNamespace(ctx, values.NamespaceIsoobs); err != nil {
		t.Fatal(err)
	}
	ns, _ := cs.CoreV1().Namespaces().Get(ctx, values.NamespaceIsoobs, metav1.GetOptions{})
	if ns.Labels[LabelPodSecurityEnforce] != "privileged" || ns.Labels["team"] != "obs" || ns.Labels[LabelManaged] != "" {
		t.Errorf("labels %v: want enforce=privileged added, the user's kept, not marked managed", ns.Labels)
	}
	if !strings.Contains(out.String(), "namespace isoobs: labeled pod-security.kubernetes.io/enforce=privileged") {
		t.Errorf("output %q does not say the namespace was labeled", out)
	}
	err := inst.ensureNamespace(ctx, values.NamespaceTetragon)
	if err == nil || !strings.Contains(err.Error(), `enforces the "baseline" Pod Security level`) {
		t.Errorf("baseline namespace: err = %v, want a refusal", err)
	}
	if err := inst.ensureNamespace(ctx, "fresh"); err != nil {
		t.Fatal(err)
	}
	if ns, _ := cs.CoreV1().Namespaces().Get(ctx, "fresh", metav1.GetOptions{}); ns.Labels[LabelPodSecurityEnforce] != "" {
		t.Errorf("a namespace without node agents got %v", ns.Labels)
	}
	if err := inst.ensureNamespace(ctx, values.NamespaceSplunk); err != nil {
		t.Fatal(err)
	}
	if ns, _ := cs.CoreV1().Namespaces().Get(ctx, values.NamespaceSplunk, metav1.GetOptions{}); ns.Labels[LabelPodSecurityEnforce] != "privileged" || ns.Labels[LabelManaged] != "true" {
		t.Errorf("created %s: labels %v", values.NamespaceSplunk, ns.Labels)
	}
}

// Item 12: tenantAuthorization.enabled turns the daemon's check on and lets it ask the API server
// (system:auth-delegator); off (the default) neither is there.
func TestDaemonChartTenantAuthorization(t *testing.T) {
	ch, err := deploy.Chart()
	if err != nil {
		t.Fatal(err)
	}
	for _, on := range []bool{false, true} {
		objs := renderComponent(t, ComponentIsoobs, values.Defaults(), Overrides{ComponentIsoobs: {"tenantAuthorization": map[string]any{"enabled": on}}}, ch)
		c := Find(objs, "DaemonSet", "isoobs").Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
		hasArg := slices.Contains(c["args"].([]any), any("--tenant-authorization"))
		crb := Find(objs, "ClusterRoleBinding", "isoobs-auth-delegator")
		if hasArg != on || (crb != nil) != on {
			t.Errorf("enabled=%v: arg %v, auth-delegator binding %v", on, hasArg, crb != nil)
		}
		if on && crb.Object["roleRef"].(map[string]any)["name"] != "system:auth-delegator" {
			t.Errorf("binding %v", crb.Object)
		}
	}
}
