package dnsgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"

	"github.com/isoobs/isoobs/testlab/controlplane"
	"github.com/isoobs/isoobs/testlab/podnet"
)

// BuildBinary builds testlab/cmd/dnsgen into dir and returns its path.
func BuildBinary(ctx context.Context, dir string) (string, error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "dnsgen")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./testlab/cmd/dnsgen")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("dnsgen: building testlab/cmd/dnsgen: %v\n%s", err, b)
	}
	return out, nil
}

// RunInPod runs the dnsgen binary bin inside pod (its cgroup and netns, as a pod's own process
// would be seen by the node's probes) and returns its report.
func RunInPod(ctx context.Context, pod *podnet.Pod, bin string, cfg Config) (*Report, error) {
	cmd := pod.Command(ctx, bin, cfg.Args()...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var rep Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		if runErr != nil {
			return nil, fmt.Errorf("dnsgen in pod %s: %v: %s", pod, runErr, bytes.TrimSpace(stderr.Bytes()))
		}
		return nil, fmt.Errorf("dnsgen in pod %s: unreadable report: %v", pod, err)
	}
	if runErr != nil {
		return &rep, fmt.Errorf("dnsgen in pod %s: %v: %s", pod, runErr, bytes.TrimSpace(stderr.Bytes()))
	}
	return &rep, nil
}
