//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/isoobs/isoobs/cgroupv2"
	"github.com/isoobs/isoobs/deploy"
	"github.com/isoobs/isoobs/install"
	"github.com/isoobs/isoobs/install/values"
	"github.com/isoobs/isoobs/testlab/controlplane"
	"github.com/isoobs/isoobs/testlab/needroot"
)

// chartCapabilities is the capability set the daemon chart grants its container.
func chartCapabilities(t *testing.T) []string {
	t.Helper()
	ch, err := deploy.Chart()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := install.Render(ch, install.Specs(values.EditionOSS)[install.ComponentIsoobs], map[string]any{}, controlplane.K8sVersion, nil)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := install.Objects(rel)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range objs {
		if m.Object.GetKind() != "DaemonSet" {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(m.Object.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			add, _, _ := unstructured.NestedStringSlice(c.(map[string]any), "securityContext", "capabilities", "add")
			drop, _, _ := unstructured.NestedStringSlice(c.(map[string]any), "securityContext", "capabilities", "drop")
			if len(drop) != 1 || drop[0] != "ALL" {
				t.Fatalf("the chart drops %v, want ALL", drop)
			}
			return add
		}
	}
	t.Fatal("the chart has no DaemonSet container")
	return nil
}

// runWithCaps runs the daemon with exactly caps (bounding, inheritable and
// ambient sets, as a container runtime gives them) and reports /healthz or
// the daemon's error.
func runWithCaps(t *testing.T, bin, root string, caps []string) (healthy bool, stderr string) {
	t.Helper()
	set := "-all"
	for _, c := range caps {
		set += ",+" + strings.ToLower(c)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out strings.Builder
	cmd := exec.CommandContext(ctx, "setpriv", "--bounding-set="+set, "--inh-caps="+set, "--ambient-caps="+set,
		bin, "--no-kubernetes", "--hubble-server", "off", "--cgroup-root", root,
		"--grpc-listen", "unix://"+filepath.Join(t.TempDir(), "d.sock"), "--metrics-listen", addr)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() { _ = cmd.Process.Kill(); <-exited }()
	for {
		select {
		case <-exited:
			return false, out.String()
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true, out.String()
			}
		}
		if ctx.Err() != nil {
			return false, out.String()
		}
	}
}

// TestChartCapabilitiesAreExactlyEnough runs the real daemon binary with the
// capabilities the chart grants — it must load, attach and report healthy —
// and with each one taken away, where it must fail and name what is missing.
// This is how the chart's set was found minimal.
func TestChartCapabilitiesAreExactlyEnough(t *testing.T) {
	needroot.Require(t, "grants capabilities")
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	caps := chartCapabilities(t)
	if got := strings.Join(caps, ","); got != "BPF,PERFMON,NET_ADMIN" {
		t.Fatalf("the chart adds %s; this test knows BPF,PERFMON,NET_ADMIN — update both together", got)
	}
	bin := filepath.Join(t.TempDir(), "isoobs-daemon")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	mount, err := cgroupv2.Mount()
	if err != nil {
		t.Skip(err)
	}
	root := filepath.Join(mount, fmt.Sprintf("isoobs-capstest-%d", os.Getpid()))
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(root)

	if ok, out := runWithCaps(t, bin, root, caps); !ok {
		t.Fatalf("with the chart's capabilities %v the daemon is not healthy:\n%s", caps, out)
	}
	for i, without := range caps {
		fewer := append(append([]string(nil), caps[:i]...), caps[i+1:]...)
		ok, out := runWithCaps(t, bin, root, fewer)
		if ok {
			t.Errorf("healthy without CAP_%s: the chart grants more than needed", without)
			continue
		}
		if !strings.Contains(out, "missing CAP_"+without) {
			t.Errorf("without CAP_%s the error does not name it:\n%s", without, out)
		}
	}
}
