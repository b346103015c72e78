package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/verify"
	"github.com/isoobs/isoobs/verify/verifytest"
)

func runVerifyCmd(t *testing.T, kubeconfig string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	streams := genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	root := NewRootCmd(streams)
	if kubeconfig != "" {
		args = append([]string{"--kubeconfig", kubeconfig}, args...)
	}
	root.SetArgs(append([]string{"verify"}, args...))
	err := root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func TestVerifyBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-o", "wide"}, `invalid -o "wide": valid formats are json, yaml (or leave -o out for the report)`},
		{[]string{"--component", "hubble,cilum"}, `unknown component "cilum": use one or more of cluster,cilium,hubble`},
		{[]string{"--edition", "pro"}, `unknown --edition "pro": use oss or enterprise`},
		{[]string{"--check-timeout", "0s"}, "--check-timeout 0s must be positive"},
		{[]string{"--interval", "2s"}, "--interval only applies with --wait"},
		{[]string{"--wait", "--timeout", "0s"}, "--timeout 0s must be positive with --wait"},
		{[]string{"extra"}, `unknown command "extra"`},
		// The active DNS check's flags.
		{[]string{"--dns-node", "n1"}, "--dns-node only applies with --dns: add --dns or drop --dns-node"},
		{[]string{"--dns-timeout", "30s"}, "--dns-timeout only applies with --dns"},
		{[]string{"--dns", "--wait"}, "--dns runs once (it starts a probe pod): drop --wait"},
		{[]string{"--dns", "--component", "hubble"}, "--dns runs the active DNS check alone: drop --component"},
		{[]string{"--dns", "--dns-timeout", "0s"}, "--dns-timeout 0s must be positive"},
		{[]string{"--dns", "--dns-namespace", ""}, "--dns-namespace is empty"},
		{[]string{"--dns", "--dns-node", ""}, "--dns-node is empty"},
		{[]string{"--dns", "--dns-labels", "app.kubernetes.io/name=x"}, "--dns-labels app.kubernetes.io/name: the probe pod sets this label itself"},
		{[]string{"--dns", "--dns-nxdomain-name", "kubernetes.default.svc.cluster.local."}, `--dns-cluster-name and --dns-nxdomain-name are both "kubernetes.default.svc.cluster.local"`},
		{[]string{"--dns", "--dns-external-name", "exa mple.com"}, `--dns-external-name "exa mple.com": character ' ' is not allowed`},
		{[]string{"--dns", "-o", "wide"}, `invalid -o "wide"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			// A kubeconfig that does not exist: validation must answer before any connection.
			_, _, err := runVerifyCmd(t, t.TempDir()+"/none", tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestVerifyUnreachableAPIServer(t *testing.T) {
	// An API server nobody listens on: every check fails fast, exit status 1, no hang.
	o := NewVerifyOptions(genericclioptions.NewConfigFlags(false), genericiooptions.NewTestIOStreamsDiscard())
	server := "https://127.0.0.1:1"
	o.ConfigFlags.APIServer = &server
	o.Components = []string{"cluster", "cilium"}
	var out bytes.Buffer
	o.Out = &out
	if err := o.Complete(nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	err := o.Run(context.Background())
	if !errors.Is(err, ErrVerifyFailed) {
		t.Fatalf("error %v, want ErrVerifyFailed", err)
	}
	if !strings.Contains(out.String(), "✖ API server") || !strings.Contains(out.String(), "kubectl cluster-info") {
		t.Errorf("table does not name the unreachable API server and the next command:\n%s", out.String())
	}
}

func TestVerifyDNSUnreachableAPIServer(t *testing.T) {
	// --dns against an API server nobody listens on: a clear error, no probe, no hang.
	o := NewVerifyOptions(genericclioptions.NewConfigFlags(false), genericiooptions.NewTestIOStreamsDiscard())
	server := "https://127.0.0.1:1"
	o.ConfigFlags.APIServer = &server
	o.DNS = true
	if err := o.Complete(nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	err := o.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "verify --dns: listing the isoobs daemon pods in namespace isoobs") {
		t.Fatalf("error %v", err)
	}
}

func TestVerifyDNSHelp(t *testing.T) {
	out, _, err := runVerifyCmd(t, "", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kubectl isoobs verify --dns\n", "--dns-node worker-2", "--dns-timeout duration", "not checked", "3 queries, 1 NXDOMAIN"} {
		if !strings.Contains(out, want) {
			t.Errorf("verify --help lacks %q", want)
		}
	}
}

// TestVerifyLab runs the command against the stack installed on a lab:
// healthy (exit 0, table and JSON), then with Hubble Relay scaled to 0
// (exit 1, the JSON names the failing check).
func TestVerifyLab(t *testing.T) {
	lab := testlab.StartForTest(t, testlab.Options{NoCoreDNS: true})
	verifytest.Install(t, lab)
	kc := lab.Kubeconfig()

	out, _, err := runVerifyCmd(t, kc)
	t.Logf("table:\n%s", out)
	if err != nil {
		t.Fatalf("healthy stack: %v", err)
	}
	for _, want := range []string{"HUBBLE", "✔ Hubble Relay", "Connected Nodes: 3/3", "✔ cilium-agent :9962", "0 failures"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Error("colour codes in output that is not a terminal")
	}

	out, _, err = runVerifyCmd(t, kc, "-o", "json", "--component", "hubble")
	if err != nil {
		t.Fatal(err)
	}
	var rep verify.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	if rep.SchemaVersion != verify.SchemaVersion || len(rep.Results) != 2 || rep.Status != verify.StatusOK {
		t.Errorf("--component hubble -o json: schema %q, %d results, status %s; want 2 ok results", rep.SchemaVersion, len(rep.Results), rep.Status)
	}

	if _, err := lab.Client().AppsV1().Deployments("kube-system").Patch(context.Background(), "hubble-relay", types.MergePatchType,
		[]byte(`{"spec":{"replicas":0}}`), metav1PatchOptions()); err != nil {
		t.Fatal(err)
	}
	out, _, err = runVerifyCmd(t, kc, "-o", "json")
	if !errors.Is(err, ErrVerifyFailed) {
		t.Fatalf("relay scaled to 0: error %v, want ErrVerifyFailed (exit 1)", err)
	}
	rep = verify.Report{}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if got := rep.Failing(verify.StatusFail); len(got) != 1 || got[0] != "hubble/relay" {
		t.Errorf("failing checks %v, want [hubble/relay]", got)
	}

	// --wait gives up at --timeout with progress on stderr and exit 1.
	_, errOut, err := runVerifyCmd(t, kc, "--wait", "--timeout", "2s", "--interval", "500ms", "--component", "hubble")
	if !errors.Is(err, ErrVerifyFailed) || !strings.Contains(errOut, "waiting (") || !strings.Contains(errOut, "hubble/relay") {
		t.Errorf("--wait on a broken relay: err %v, progress %q", err, errOut)
	}
}

func metav1PatchOptions() metav1.PatchOptions { return metav1.PatchOptions{} }
