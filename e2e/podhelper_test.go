package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/isoobs/isoobs/testlab/podnet"
)

// podHelper is a TestHelper* process of this test binary running in a lab pod (its network
// namespace and cgroup): it prints "ready" once set up, and a JSON summary line at the end.
type podHelper struct {
	t     *testing.T
	name  string
	wait  func() error
	lines *bufio.Scanner
}

// startPodHelper runs TestHelper<name> in pod with env added and returns once it printed "ready".
func startPodHelper(t *testing.T, ctx context.Context, pod *podnet.Pod, name string, env ...string) *podHelper {
	t.Helper()
	cmd := pod.Command(ctx, os.Args[0], "-test.run=^TestHelper"+name+"$")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &podHelper{t: t, name: name, wait: cmd.Wait, lines: bufio.NewScanner(out)}
	for h.lines.Scan() {
		if h.lines.Text() == "ready" {
			return h
		}
	}
	t.Fatalf("helper %s ended before it was ready: %v", name, cmd.Wait())
	return nil
}

// summary waits for the helper to end and decodes its last JSON line into v.
func (h *podHelper) summary(v any) {
	h.t.Helper()
	var last string
	for h.lines.Scan() {
		if strings.HasPrefix(h.lines.Text(), "{") {
			last = h.lines.Text()
		}
	}
	if err := h.wait(); err != nil {
		h.t.Fatalf("helper %s: %v", h.name, err)
	}
	if err := json.Unmarshal([]byte(last), v); err != nil {
		h.t.Fatalf("helper %s summary %q: %v", h.name, last, err)
	}
}
