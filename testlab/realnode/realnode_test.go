//go:build linux

package realnode_test

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/needroot"
	"github.com/isoobs/isoobs/testlab/realnode"
)

const crashChildEnv = "ISOOBS_REALNODE_CRASH_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		return
	}
	os.Exit(m.Run())
}

// pausePod is a pod of the node's own pause image on the real node.
func pausePod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{realnode.Label: "true"},
			Tolerations:                   []corev1.Toleration{realnode.Toleration},
			TerminationGracePeriodSeconds: new(int64),
			Containers:                    []corev1.Container{{Name: "main", Image: realnode.PauseImage, ImagePullPolicy: corev1.PullNever}},
		},
	}
}

// crashChild starts a lab with a real node running a pod, says READY and waits to be killed.
func crashChild(dir string) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	lab, err := testlab.Start(ctx, testlab.Options{RealNode: true, Nodes: []string{"crash-a"}, NoCoreDNS: true, Dir: dir})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	if _, err := lab.CreatePod(ctx, pausePod("victim")); err == nil {
		_, _, err = lab.WaitPodReady(ctx, "default", "victim")
	}
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fmt.Println("READY")
	select {}
}

// TestRealNodeCleanupAfterCrash kills a process running a real node with a pod (SIGKILL: no
// teardown runs; the kubelet and containerd die with it, the shim and the pod do not), then
// starts a new lab with a real node: its Start must sweep what the dead one left, run a pod,
// and its Close must leave the host as it was.
func TestRealNodeCleanupAfterCrash(t *testing.T) {
	needroot.Require(t, "the real node runs a kubelet and containerd")
	if _, err := realnode.EnsureBinaries(); err != nil {
		t.Fatal(err)
	}
	before := realnode.TakeSnapshot()
	t.Cleanup(func() {
		var left []string
		for _, d := range realnode.TakeSnapshot().Diff(before) {
			// podnet switches forwarding on for every lab and leaves it on (not the real node's).
			if !strings.Contains(d, "forwarding") && !strings.Contains(d, "ip_forward") {
				left = append(left, d)
			}
		}
		if len(left) > 0 {
			t.Errorf("left on the host:\n%s", strings.Join(left, "\n"))
		}
	})

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+t.TempDir())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l := sc.Text(); l == "READY" || strings.HasPrefix(l, "ERROR") {
				ready <- l
				return
			}
		}
		ready <- "child exited"
	}()
	select {
	case l := <-ready:
		if l != "READY" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("child: %s", l)
		}
	case <-time.After(5 * time.Minute):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("child not ready in 5m")
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	time.Sleep(time.Second) // Pdeathsig kills reach the kubelet and containerd
	left := realnode.TakeSnapshot().Diff(before)
	t.Logf("after the crash, %d differences on the host, e.g. %q", len(left), first(left, 6))
	if len(left) == 0 {
		t.Fatal("the crashed node left nothing: the test does not test the sweep")
	}

	t0 := time.Now()
	lab := testlab.StartForTest(t, testlab.Options{RealNode: true, Nodes: []string{"crash-b"}, NoCoreDNS: true})
	t.Logf("lab with real node up in %s after sweeping (real node: %v)", time.Since(t0).Round(time.Millisecond), lab.Real.Timings)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := lab.CreatePod(ctx, pausePod("after-crash")); err != nil {
		t.Fatal(err)
	}
	p, _, err := lab.WaitPodReady(ctx, "default", "after-crash")
	if err != nil {
		t.Fatal(err)
	}
	if !lab.Real.Subnet.Contains(mustAddr(t, p.Status.PodIP)) {
		t.Errorf("pod IP %s outside the real node's subnet %s", p.Status.PodIP, lab.Real.Subnet)
	}
	// What a real node gives pods: the root CA ConfigMap (kcm's publisher) in their namespace.
	if _, err := lab.Client().CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{}); err != nil {
		t.Errorf("kube-root-ca.crt: %v", err)
	}
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
