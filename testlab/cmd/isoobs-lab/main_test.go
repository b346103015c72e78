package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/needroot"
	"github.com/isoobs/isoobs/testlab/podnet"
)

// TestUpStatusDown drives the built command: up in the background, status, a SIGKILLed lab
// process, and down, which must leave no process, veth, cgroup or state behind.
func TestUpStatusDown(t *testing.T) {
	needroot.Require(t, "the lab")
	bin := filepath.Join(t.TempDir(), "isoobs-lab")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const id = "tcli"
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("isoobs-lab %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Cleanup(func() { exec.Command(bin, "down", "--id", id).Run() })

	out := run("up", "--id", id, "--nodes", "n1,n2")
	kubeconfig := filepath.Join(StateRoot, id, "cp", "kubeconfig")
	if !strings.Contains(out, "export KUBECONFIG="+kubeconfig) {
		t.Fatalf("up output does not name the kubeconfig %s:\n%s", kubeconfig, out)
	}
	st, alive := readState(id)
	if !alive {
		t.Fatalf("state after up: %+v, not alive", st)
	}
	out = run("status")
	if !strings.Contains(out, id+": running") || !strings.Contains(out, "n1,n2") {
		t.Errorf("status:\n%s", out)
	}
	if out, err := exec.Command(bin, "up", "--id", id).CombinedOutput(); err == nil || !strings.Contains(string(out), "already running") {
		t.Errorf("second up with the same id: %v\n%s", err, out)
	}
	// A pod so there is a veth and pod cgroups to sweep.
	if out, err := exec.Command("kubectl", "--kubeconfig", kubeconfig, "run", "p", "--image=registry.k8s.io/pause:3.10").CombinedOutput(); err != nil {
		t.Logf("kubectl run (optional): %v\n%s", err, out)
	}

	// The lab process dies without cleaning up; down must sweep.
	if err := exec.Command("kill", "-9", itoa(st.PID)).Run(); err != nil {
		t.Fatal(err)
	}
	run("down", "--id", id)
	if _, err := os.Stat(filepath.Join(StateRoot, id)); !os.IsNotExist(err) {
		t.Errorf("state dir left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(podnet.StateRoot, id)); !os.IsNotExist(err) {
		t.Errorf("podnet state left: %v", err)
	}
	if data, err := os.ReadFile(filepath.Join(testlab.NetClaimDir, strconv.Itoa(st.NetIndex))); err == nil && strings.TrimSpace(string(data)) == strconv.Itoa(st.PID) {
		t.Errorf("address-range claim of the killed lab left")
	}
	cg2, _ := podnet.CgroupV2Mount()
	if _, err := os.Stat(filepath.Join(cg2, "isoobs-"+id)); !os.IsNotExist(err) {
		t.Errorf("cgroup dir left: %v", err)
	}
	links, _ := netlink.LinkList()
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, id+"-") {
			t.Errorf("veth %s left", l.Attrs().Name)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if data, err := os.ReadFile(p); err == nil && strings.Contains(string(data), filepath.Join(StateRoot, id)) {
			t.Errorf("process left: %s", strings.ReplaceAll(string(data), "\x00", " "))
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
