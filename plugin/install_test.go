package plugin

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// fakeKubeconfig points at a port nothing listens on: the bad-input errors
// below must come before any cluster access.
func fakeKubeconfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	const kc = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
contexts:
- name: c
  context: {cluster: c, user: u}
current-context: c
users:
- name: u
  user: {token: x}
`
	if err := os.WriteFile(p, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func runRoot(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	streams := genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	for k, v := range env {
		t.Setenv(k, v)
	}
	cmd := NewRootCmd(streams)
	cmd.SetArgs(append([]string{"--kubeconfig", fakeKubeconfig(t)}, args...))
	err := cmd.ExecuteContext(context.Background())
	return out.String() + errOut.String(), err
}

func TestInstallBadInput(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tok-SECRET-4711\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"unreachable repository", []string{"install", "--components", "cilium"},
			nil, []string{"https://helm.cilium.io", "--chart-dir cilium=DIR", "air-gapped"}},
		{"unreachable enterprise repository", []string{"install", "--edition", "enterprise", "--components", "cilium-dnsproxy"},
			nil, []string{"https://helm.isovalent.com", "--chart-dir cilium-dnsproxy=DIR"}},
		{"monitoring chart has no repository", []string{"install", "--components", "prometheus,cilium", "--chart-dir", "cilium=/nonexistent"},
			nil, []string{"--chart-dir prometheus=DIR", "examples/kubernetes/addons/prometheus"}},
		{"splunk chart unreachable names the repo", []string{"install", "--pipeline", "splunk", "--splunk-realm", "us1", "--splunk-token-file", tokenFile, "--components", "splunk-otel-collector"},
			nil, []string{"https://signalfx.github.io/splunk-otel-collector-chart", "--chart-dir splunk-otel-collector=DIR"}},
		{"splunk without token", []string{"install", "--pipeline", "splunk", "--splunk-realm", "us1"},
			map[string]string{"SPLUNK_ACCESS_TOKEN": ""}, []string{"--splunk-token-file", "SPLUNK_ACCESS_TOKEN"}},
		{"splunk without realm", []string{"install", "--pipeline", "splunk"},
			nil, []string{"--splunk-realm"}},
		{"set without value", []string{"install", "--set", "cilium.hubble.enabled"},
			nil, []string{"--set cilium.hubble.enabled", "no value"}},
		{"set on unknown component", []string{"install", "--set", "hubble.enabled=true"},
			nil, []string{`"hubble" is not a component`, "cilium.hubble.ui.enabled"}},
		{"set for a component not installed", []string{"install", "--components", "isoobs", "--set", "cilium.debug.enabled=true"},
			nil, []string{"values are set for cilium", "--components"}},
		{"unknown profile", []string{"install", "--profile", "gke"}, nil, []string{`unknown profile "gke"`, "default, kubeadm, eks-eni"}},
		{"unknown component", []string{"install", "--components", "hubble"}, nil, []string{`unknown component "hubble"`}},
		{"chart-dir of unknown component", []string{"install", "--chart-dir", "foo=/tmp"}, nil, []string{`"foo" is not a component`}},
		{"kubeadm without api server port", []string{"install", "--profile", "kubeadm", "--k8s-service-host", "10.0.0.1", "--k8s-service-port", "-1"}, nil, []string{"--k8s-service-port -1"}},
		{"dnsproxy without enterprise", []string{"install", "--components", "cilium-dnsproxy"}, nil, []string{"only with --edition enterprise"}},
		{"prometheus component with splunk pipeline", []string{"install", "--pipeline", "splunk", "--splunk-realm", "us1", "--components", "prometheus"}, nil, []string{"--pipeline prometheus"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runRoot(t, tc.env, tc.args...)
			if err == nil {
				t.Fatalf("no error; output:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
			if strings.Contains(out+err.Error(), "tok-SECRET-4711") {
				t.Errorf("the token appears in the output or error")
			}
		})
	}
}

func TestUninstallBadInput(t *testing.T) {
	_, err := runRoot(t, nil, "uninstall", "--timeout", "0s")
	if err == nil || !strings.Contains(err.Error(), "--timeout 0s must be positive") {
		t.Fatalf("err = %v", err)
	}
}
