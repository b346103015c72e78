package install

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"

	"github.com/isoobs/isoobs/install/values"
	"github.com/isoobs/isoobs/testlab"
)

// syncBuffer collects installer output (the wait loop writes from the test goroutine only,
// but Helm's log may not).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) take() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	b.buf.Reset()
	return s
}

func labInstaller(t *testing.T, lab *testlab.Lab) (*Installer, *syncBuffer) {
	t.Helper()
	flags := genericclioptions.NewConfigFlags(false)
	kc := lab.Kubeconfig()
	flags.KubeConfig = &kc
	out := &syncBuffer{}
	inst, err := New(flags, out)
	if err != nil {
		t.Fatal(err)
	}
	inst.pollInterval = 200 * time.Millisecond
	return inst, out
}

// snapshot lists every object of every listable resource, as kind/namespace/name,
// leaving out what churns on its own (events, leases, endpoints).
func snapshot(t *testing.T, lab *testlab.Lab) []string {
	t.Helper()
	cfg := lab.RESTConfig()
	dc := discovery.NewDiscoveryClientForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	_, lists, err := dc.ServerGroupsAndResources()
	if err != nil {
		t.Fatal(err)
	}
	skip := map[string]bool{"Event": true, "Lease": true, "Endpoints": true, "EndpointSlice": true, "ComponentStatus": true}
	var out []string
	for _, l := range lists {
		gv, _ := schema.ParseGroupVersion(l.GroupVersion)
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || skip[r.Kind] || !slices.Contains(r.Verbs, "list") {
				continue
			}
			// Each kind once: the preferred version is listed first per group.
			list, err := dyn.Resource(gv.WithResource(r.Name)).List(context.Background(), metav1.ListOptions{})
			if err != nil {
				continue
			}
			for _, o := range list.Items {
				out = append(out, gv.Group+"/"+r.Kind+"/"+o.GetNamespace()+"/"+o.GetName())
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func labOptions(t *testing.T) Options {
	o := Options{
		Values:     values.Defaults(),
		Components: []Component{ComponentCilium, ComponentTetragon, ComponentPrometheus, ComponentIsoobs},
		Sources:    localSources(t),
		Wait:       true,
		Timeout:    3 * time.Minute,
	}
	o.Values.ClusterName = "lab"
	return o
}

func releaseRevisions(t *testing.T, inst *Installer, edition values.Edition, cs ...Component) map[Component]int {
	t.Helper()
	out := map[Component]int{}
	for _, c := range cs {
		rel, err := inst.currentRelease(Specs(edition)[c])
		if err != nil {
			t.Fatal(err)
		}
		if rel != nil {
			out[c] = rel.Version
		}
	}
	return out
}

var readyLine = regexp.MustCompile(`(?m)^(\S+): pods ready (\d+)/(\d+) \(`)

func TestLabInstallIdempotentUpgradeUninstall(t *testing.T) {
	lab := testlab.StartForTest(t, testlab.Options{NoCoreDNS: true, Nodes: []string{"inst-a", "inst-b"}})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	inst, out := labInstaller(t, lab)
	before := snapshot(t, lab)

	// 1. Dry run: prints manifests, changes nothing.
	o := labOptions(t)
	o.DryRun = true
	if _, err := inst.Install(ctx, o); err != nil {
		t.Fatal(err)
	}
	dry := out.take()
	for _, want := range []string{"# cilium: would install release kube-system/cilium", "kind: DaemonSet", "name: cilium-config", "# isoobs: would install release isoobs/isoobs"} {
		if !strings.Contains(dry, want) {
			t.Errorf("dry run output lacks %q", want)
		}
	}
	if after := snapshot(t, lab); !slices.Equal(before, after) {
		t.Fatalf("--dry-run changed the cluster: %v", symDiff(before, after))
	}

	// 2. Install with --wait: every component's pods become ready, progress shown.
	o.DryRun = false
	start := time.Now()
	res, err := inst.Install(ctx, o)
	text := out.take()
	t.Logf("install took %s:\n%s", time.Since(start).Round(time.Millisecond), text)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range o.Components {
		if res.Actions[c] != "install" {
			t.Errorf("%s: action %q, want install", c, res.Actions[c])
		}
	}
	final := map[string]string{}
	for _, m := range readyLine.FindAllStringSubmatch(text, -1) {
		final[m[1]] = m[2] + "/" + m[3]
	}
	// 2 nodes: cilium 2 agents + 2 envoy + 2 operator + relay + ui = 8;
	// tetragon 2 + operator = 3; prometheus + grafana = 2; isoobs 2.
	wantReady := map[string]string{"cilium": "8/8", "tetragon": "3/3", "prometheus": "2/2", "isoobs": "2/2"}
	for c, w := range wantReady {
		if final[c] != w {
			t.Errorf("%s: last progress %q, want pods ready %s", c, final[c], w)
		}
	}
	cs := lab.Client()
	for _, ds := range []struct{ ns, name string }{{"kube-system", "cilium"}, {"kube-system", "cilium-envoy"}, {"tetragon", "tetragon"}, {"isoobs", "isoobs"}} {
		d, err := cs.AppsV1().DaemonSets(ds.ns).Get(ctx, ds.name, metav1.GetOptions{})
		if err != nil {
			t.Errorf("DaemonSet %s/%s: %v", ds.ns, ds.name, err)
			continue
		}
		if d.Status.NumberReady != 2 {
			t.Errorf("DaemonSet %s/%s: %d ready, want 2 (one per node)", ds.ns, ds.name, d.Status.NumberReady)
		}
	}
	cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "cilium-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["hubble-metrics"] != strings.Join(seed001HubbleMetrics[:8], " ") || cm.Data["enable-hubble"] != "true" {
		t.Errorf("installed cilium-config: hubble-metrics %q enable-hubble %q", cm.Data["hubble-metrics"], cm.Data["enable-hubble"])
	}
	revs := releaseRevisions(t, inst, values.EditionOSS, o.Components...)

	// 3. Second run: nothing changes and it says so.
	res, err = inst.Install(ctx, o)
	text = out.take()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range o.Components {
		if res.Actions[c] != "unchanged" {
			t.Errorf("second run: %s action %q, want unchanged", c, res.Actions[c])
		}
		if !strings.Contains(text, string(c)+" (") || !strings.Contains(text, "unchanged, revision 1") {
			t.Errorf("second run output does not say %s is unchanged:\n%s", c, text)
		}
	}
	if got := releaseRevisions(t, inst, values.EditionOSS, o.Components...); !mapsEqual(got, revs) {
		t.Errorf("second run made new revisions: %v -> %v", revs, got)
	}
	if strings.Contains(text, "pods ready") {
		t.Errorf("second run waited for unchanged components:\n%s", text)
	}

	// 4. An override upgrades only its component; later runs keep it.
	o.Overrides, err = ParseOverrides(nil, []string{"isoobs.interval=2s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err = inst.Install(ctx, o)
	text = out.take()
	if err != nil {
		t.Fatal(err)
	}
	if res.Actions[ComponentIsoobs] != "upgrade" || res.Actions[ComponentCilium] != "unchanged" {
		t.Errorf("--set isoobs.interval=2s: actions %v, want isoobs upgrade, others unchanged\n%s", res.Actions, text)
	}
	if args := daemonArgs(t, lab, ctx); !slices.Contains(args, "--interval=2s") {
		t.Errorf("daemon args after --set isoobs.interval=2s: %v", args)
	}
	o.Overrides = nil
	res, err = inst.Install(ctx, o)
	out.take()
	if err != nil {
		t.Fatal(err)
	}
	if res.Actions[ComponentIsoobs] != "unchanged" {
		t.Errorf("run without --set after an override: isoobs %q, want unchanged (the override is kept)", res.Actions[ComponentIsoobs])
	}
	o.ResetOverrides = true
	res, err = inst.Install(ctx, o)
	out.take()
	if err != nil {
		t.Fatal(err)
	}
	if res.Actions[ComponentIsoobs] != "upgrade" {
		t.Errorf("--reset-overrides: isoobs %q, want upgrade", res.Actions[ComponentIsoobs])
	}
	if args := daemonArgs(t, lab, ctx); !slices.Contains(args, "--interval=1s") {
		t.Errorf("daemon args after --reset-overrides: %v", args)
	}

	// 5. Uninstall removes exactly what install created.
	if _, err := inst.Uninstall(ctx, UninstallOptions{Wait: true, Timeout: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	t.Logf("uninstall:\n%s", out.take())
	var after []string
	deadline := time.Now().Add(2 * time.Minute)
	for {
		after = snapshot(t, lab)
		if slices.Equal(before, after) || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if !slices.Equal(before, after) {
		t.Errorf("after uninstall the cluster differs from before install: %v", symDiff(before, after))
	}
}

func daemonArgs(t *testing.T, lab *testlab.Lab, ctx context.Context) []string {
	t.Helper()
	ds, err := lab.Client().AppsV1().DaemonSets("isoobs").Get(ctx, "isoobs", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ds.Spec.Template.Spec.Containers[0].Args
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// symDiff says what only one of two sorted lists has.
func symDiff(before, after []string) string {
	var onlyBefore, onlyAfter []string
	for _, s := range before {
		if _, ok := slices.BinarySearch(after, s); !ok {
			onlyBefore = append(onlyBefore, s)
		}
	}
	for _, s := range after {
		if _, ok := slices.BinarySearch(before, s); !ok {
			onlyAfter = append(onlyAfter, s)
		}
	}
	return fmt.Sprintf("gone: %v\nnew: %v", onlyBefore, onlyAfter)
}
