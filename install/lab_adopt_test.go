package install

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/isoobs/isoobs/install/values"
	"github.com/isoobs/isoobs/testlab"
)

const testToken = "tok-SECRET-4711"

func TestLabSplunkTokenOnlyInSecretAndAdopt(t *testing.T) {
	lab := testlab.StartForTest(t, testlab.Options{NoCoreDNS: true, Nodes: []string{"adopt-a", "adopt-b"}})
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	inst, out := labInstaller(t, lab)
	helmLog := &syncBuffer{}
	inst.SetHelmLog(func(format string, args ...any) { fmt.Fprintf(helmLog, format+"\n", args...) })

	o := labOptions(t)
	o.Values.Pipeline, o.Values.Splunk.Realm = values.PipelineSplunk, "us1"
	o.Components = []Component{ComponentSplunk}
	o.Sources[ComponentSplunk] = Source{Dir: filepath.Join("testdata", "splunk-otel-collector")}
	o.SplunkToken = testToken

	// Dry run: the token Secret is shown redacted.
	o.DryRun = true
	if _, err := inst.Install(ctx, o); err != nil {
		t.Fatal(err)
	}
	dry := out.take()
	if strings.Contains(dry, testToken) {
		t.Error("the token appears in --dry-run output")
	}
	for _, want := range []string{"kind: Secret", "<redacted", "filter/includemetrics", "hubble_dns_queries_total"} {
		if !strings.Contains(dry, want) {
			t.Errorf("dry run lacks %q", want)
		}
	}
	o.DryRun = false
	if _, err := inst.Install(ctx, o); err != nil {
		t.Fatal(err)
	}
	t.Logf("splunk install:\n%s", out.take())
	cs := lab.Client()
	sec, err := cs.CoreV1().Secrets(values.NamespaceSplunk).Get(ctx, o.Values.Splunk.TokenSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(sec.Data[values.SplunkTokenKey]) != testToken {
		t.Errorf("token Secret holds %q", sec.Data[values.SplunkTokenKey])
	}
	cms, err := cs.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	agentConfig := false
	for _, cm := range cms.Items {
		data, _ := yaml.Marshal(cm.Data)
		if strings.Contains(string(data), testToken) {
			t.Errorf("the token is in ConfigMap %s/%s", cm.Namespace, cm.Name)
		}
		agentConfig = agentConfig || strings.Contains(cm.Data["relay"], "prometheus/isovalent_cilium")
	}
	if !agentConfig {
		t.Error("no ConfigMap holds the collector's agent config: the ConfigMap check proves nothing")
	}
	rel, err := inst.currentRelease(Specs(values.EditionOSS)[ComponentSplunk])
	if err != nil || rel == nil {
		t.Fatal(err)
	}
	if cfg, _ := yaml.Marshal(rel.Config); strings.Contains(string(cfg), testToken) || strings.Contains(rel.Manifest, testToken) {
		t.Error("the token is in the Helm release (values or manifest)")
	}
	if strings.Contains(helmLog.take(), testToken) {
		t.Error("the token is in the Helm log")
	}

	// Someone else's Cilium: values diff and a refusal, then --adopt.
	ciliumChart := loadDir(t, ciliumChartDir(t))
	cfg, err := inst.helmConfig(values.NamespaceCilium)
	if err != nil {
		t.Fatal(err)
	}
	foreign := action.NewInstall(cfg)
	foreign.ReleaseName, foreign.Namespace = "cilium", values.NamespaceCilium
	if _, err := foreign.RunWithContext(ctx, ciliumChart, map[string]any{"hubble": map[string]any{"enabled": false}, "cluster": map[string]any{"name": "theirs"}}); err != nil {
		t.Fatal(err)
	}
	o = labOptions(t)
	o.Components = []Component{ComponentCilium}
	_, err = inst.Install(ctx, o)
	if err == nil {
		t.Fatal("install over a foreign Cilium release succeeded without --adopt")
	}
	for _, want := range []string{"already installed by someone else", "--adopt", "-  name: theirs", "+  name: lab"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal lacks %q:\n%v", want, err)
		}
	}
	if rel, _ := inst.currentRelease(Specs(values.EditionOSS)[ComponentCilium]); rel == nil || rel.Version != 1 {
		t.Errorf("the refused run changed the foreign release: %v", rel)
	}
	o.Adopt = true
	res, err := inst.Install(ctx, o)
	t.Logf("adopt:\n%s", out.take())
	if err != nil {
		t.Fatal(err)
	}
	if res.Actions[ComponentCilium] != "adopt" {
		t.Errorf("action %q, want adopt", res.Actions[ComponentCilium])
	}
	rel, _ = inst.currentRelease(Specs(values.EditionOSS)[ComponentCilium])
	if rel == nil || rel.Version != 2 || rel.Labels[LabelAdopted] != "true" {
		t.Fatalf("after --adopt: %+v", rel)
	}
	// A second run with --adopt is a no-op like any other.
	if res, err := inst.Install(ctx, o); err != nil || res.Actions[ComponentCilium] != "unchanged" {
		t.Errorf("second --adopt run: %v %v", res, err)
	}
	out.take()

	// Uninstall removes the collector but leaves the adopted Cilium.
	if _, err := inst.Uninstall(ctx, UninstallOptions{}); err != nil {
		t.Fatal(err)
	}
	text := out.take()
	t.Logf("uninstall:\n%s", text)
	if !strings.Contains(text, "cilium (kube-system/cilium): adopted with --adopt, not created by isoobs: left in place") {
		t.Error("uninstall does not say it leaves the adopted Cilium")
	}
	if rel, _ := inst.currentRelease(Specs(values.EditionOSS)[ComponentCilium]); rel == nil {
		t.Error("uninstall removed the adopted Cilium release")
	}
	if rel, _ := inst.currentRelease(Specs(values.EditionOSS)[ComponentSplunk]); rel != nil {
		t.Error("uninstall left the collector release")
	}
	if _, err := cs.CoreV1().Secrets(values.NamespaceSplunk).Get(ctx, o.Values.Splunk.TokenSecretName, metav1.GetOptions{}); err == nil {
		t.Error("uninstall left the token Secret")
	}
}
