package plugin

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/isoobs/isoobs/testlab/controlplane"
)

// completions returns what cobra's __complete offers for args (the last one being completed).
func completions(t *testing.T, args ...string) []string {
	t.Helper()
	out, _, err := runCmd(t, append([]string{"__complete"}, args...)...)
	if err != nil {
		t.Fatalf("__complete %v: %v", args, err)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(l, ":") {
			got = append(got, strings.SplitN(l, "\t", 2)[0])
		}
	}
	return got
}

func TestEnumFlagsComplete(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"top", "dns", "--sort", ""}, "qps queries nxdomain servfail timeouts errors latency malformed name"},
		{[]string{"top", "dns", "--group-by", ""}, "pod workload namespace qname node server"},
		{[]string{"top", "dns", "-o", ""}, "wide json yaml"},
		{[]string{"top", "dns", "--source", ""}, "all ebpf hubble"},
		{[]string{"status", "-o", ""}, "wide json yaml"},
		{[]string{"verify", "-o", ""}, "json yaml"},
		{[]string{"verify", "--component", ""}, "cluster cilium hubble tetragon dnsproxy config metrics l7 pipeline isoobs"},
		{[]string{"version", "-o", ""}, "json yaml"},
		{[]string{"completion", ""}, "kubectl bash zsh fish powershell"},
	} {
		if got := strings.Join(completions(t, tc.args...), " "); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestCompletionScripts(t *testing.T) {
	out, _, err := runCmd(t, "completion", "kubectl")
	if err != nil || out != KubectlCompleteScript {
		t.Errorf("completion kubectl = %q, %v", out, err)
	}
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		out, _, err := runCmd(t, "completion", shell)
		if err != nil || !strings.Contains(out, "__complete") || !strings.Contains(out, "kubectl-isoobs") {
			t.Errorf("completion %s: %v\n%.300s", shell, err, out)
		}
	}
	if _, _, err := runCmd(t, "completion", "tcsh"); err == nil || !strings.Contains(err.Error(), `invalid argument "tcsh"`) {
		t.Errorf("completion tcsh: %v", err)
	}
}

// TestKubectlCompletesThePlugin: the real kubectl (v1.34, built by make deps) completes
// `kubectl isoobs top dns --group-by <TAB>` through kubectl_complete-isoobs on PATH.
func TestKubectlCompletesThePlugin(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin and runs the real kubectl: skipped under -short (make unit)")
	}
	kubectl := filepath.Join(controlplane.CacheDir(), "bin", "k8s-node-v1.34.4", "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		t.Fatalf("kubectl is not built: run `make deps` (or testlab/scripts/build-bins.sh node): %v", err)
	}
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "kubectl-isoobs"), "../cmd/kubectl-isoobs").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "kubectl_complete-isoobs"), []byte(KubectlCompleteScript), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kubectl, "__complete", "isoobs", "top", "dns", "--group-by", "")
	cmd.Env = []string{"PATH=" + dir + ":/usr/bin:/bin", "HOME=" + dir}
	out, err := cmd.Output()
	if err != nil || string(out) != "pod\nworkload\nnamespace\nqname\nnode\nserver\n:4\n" {
		t.Errorf("kubectl __complete isoobs top dns --group-by: %v\n%s", err, out)
	}
}

func TestTopDNSHelpIsGrouped(t *testing.T) {
	out, _, err := runCmd(t, "top", "dns", "--help")
	if err != nil {
		t.Fatal(err)
	}
	titles := []string{"Which rows (and -n from the global flags):", "How they are counted and shown:", "Output:",
		"Every node's daemon (the default):", "One daemon at an address (--daemon):", "In this process on this host (--local):",
		"Other flags:", "Global Flags:"}
	at := 0
	for _, title := range titles {
		i := strings.Index(out[at:], "\n"+title+"\n")
		if i < 0 {
			t.Fatalf("no section %q after byte %d of:\n%s", title, at, out)
		}
		at += i + 1
	}
	if strings.Contains(out, "\nFlags:\n") {
		t.Error("an ungrouped Flags: section is left")
	}
	// Every flag of top dns is shown exactly once in the sections.
	sections := out[strings.Index(out, titles[0]):strings.Index(out, "Global Flags:")]
	root := NewRootCmd(genericiooptions.NewTestIOStreamsDiscard())
	dns, _, err := root.Find([]string{"top", "dns"})
	if err != nil {
		t.Fatal(err)
	}
	dns.LocalFlags().VisitAll(func(f *pflag.Flag) {
		if n := strings.Count(sections, "--"+f.Name+" "); n != 1 {
			t.Errorf("--%s appears %d times in the help", f.Name, n)
		}
	})
	if !strings.Contains(sections, "Output:\n  -o, --output string") {
		t.Errorf("-o is not first under Output:\n%s", out)
	}
}
