package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/isoobs/isoobs/deploy"
	"github.com/isoobs/isoobs/release/image"
	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/controlplane"
	"github.com/isoobs/isoobs/testlab/dnsgen"
	"github.com/isoobs/isoobs/testlab/realnode"
	"github.com/isoobs/isoobs/testlab/scenario"
)

// crawlerImage holds /pause (the entrypoint: the crawler idles until the flood) and /dnsgen.
const (
	crawlerImage = "isoobs.local/crawler:demo"
	demoVersion  = "v0.0.0-demo"
)

type realImages struct {
	daemon  image.Result
	crawler string // docker-archive
}

// buildImages makes the daemon image as `make image` does (this host's platform) and stamps
// its digest where a release build of the plugin has it, so the chart pins it.
func buildImages(ctx context.Context, work string) (*realImages, error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return nil, err
	}
	res, err := image.Build(ctx, image.Options{RepoRoot: root, Version: demoVersion, Commit: "demo",
		Date: time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC), Platforms: []string{"linux/" + runtime.GOARCH}, OutDir: filepath.Join(work, "image")})
	if err != nil {
		return nil, err
	}
	deploy.DaemonImageRepository, deploy.DaemonImageTag, deploy.DaemonImageDigest = image.DefaultRepository, demoVersion, res.IndexDigest
	plat := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	bins := map[string]string{}
	for _, pkg := range []string{"./testlab/realnode/pause", "./testlab/cmd/dnsgen"} {
		out := filepath.Join(work, "crawler", filepath.Base(pkg))
		if err := image.BuildBinary(ctx, image.Binary{Dir: root, Package: pkg, Platform: plat, LDFlags: "-s -w", Out: out}); err != nil {
			return nil, err
		}
		bins["/"+filepath.Base(pkg)] = out
	}
	tar := filepath.Join(work, "crawler.docker.tar")
	if err := realnode.BuildImage(tar, crawlerImage, []string{"/pause"}, bins); err != nil {
		return nil, err
	}
	return &realImages{daemon: res, crawler: tar}, nil
}

// moveCrawler rolls the crawler Deployment onto the real node as a real container and returns
// its Ready pod there.
func moveCrawler(ctx context.Context, lab *testlab.Lab) (*corev1.Pod, error) {
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
		"nodeSelector": map[string]string{realnode.Label: "true"},
		"tolerations":  []corev1.Toleration{realnode.Toleration},
		"containers":   []map[string]any{{"name": scenario.Crawler, "image": crawlerImage, "imagePullPolicy": "Never"}},
	}}}})
	c := lab.Client()
	if _, err := c.AppsV1().Deployments(scenario.Namespace).Patch(ctx, scenario.Crawler, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return nil, fmt.Errorf("moving the crawler to %s: %w", lab.Real.Name, err)
	}
	var pod *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := c.CoreV1().Pods(scenario.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + scenario.Crawler})
		if err != nil || len(pods.Items) != 1 {
			return false, nil // the old pod is still terminating
		}
		p := &pods.Items[0]
		if p.Spec.NodeName != lab.Real.Name || p.Status.Phase != corev1.PodRunning {
			return false, nil
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				pod = p
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return nil, fmt.Errorf("the crawler did not come up on %s: %w", lab.Real.Name, err)
	}
	fmt.Printf("crawler moved to %s: %s/%s is a real container now\n", lab.Real.Name, pod.Namespace, pod.Name)
	return pod, nil
}

// execDNSGen runs /dnsgen in the crawler's container through the API server's exec (→ kubelet
// → containerd) and returns the generator's report.
func execDNSGen(ctx context.Context, lab *testlab.Lab, pod *corev1.Pod, cfg dnsgen.Config) (*dnsgen.Report, error) {
	req := lab.Client().CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: scenario.Crawler, Command: append([]string{"/dnsgen"}, cfg.Args()...),
			Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(lab.RESTConfig(), "POST", req.URL())
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
	var rep dnsgen.Report
	if jerr := json.Unmarshal(stdout.Bytes(), &rep); jerr != nil {
		return nil, fmt.Errorf("dnsgen in %s: %v %v: %s", pod.Name, err, jerr, stderr.String())
	}
	return &rep, err
}
