package plugin

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/isoobs/isoobs/plugin/internal/fakedaemon"
	"github.com/isoobs/isoobs/plugin/internal/vtscreen"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// TestTopDNSLiveViewThroughPTY runs `kubectl isoobs top dns` on a real pseudo-terminal against
// two daemons, one that stalls and an address where none answers, types keys as a user would and checks what
// the screen shows after each: the header (nodes answering/missing/stale, the window), the
// sort switch, the row filter (/), the group switch (g, which asks the daemons again) and Esc
// back out of each, and q leaving the terminal as it was.
func TestTopDNSLiveViewThroughPTY(t *testing.T) {
	ptm, tty, err := vtscreen.OpenPTY(30, 400)
	if err != nil {
		t.Fatalf("open a pty: %v", err)
	}
	defer ptm.Close()
	defer tty.Close()
	screen := vtscreen.New(30, 400)
	go func() { _, _ = io.Copy(screen, ptm) }()

	a := &fakedaemon.Server{Node: "node-a", Frame: crawlerFrame}
	b := &fakedaemon.Server{Node: "node-b", Frame: crawlerFrame}
	// c sends one frame, then nothing while its stream stays open: stale after 3 intervals.
	c := &fakedaemon.Server{Node: "node-c", Frame: crawlerFrame, Ticks: make(chan struct{}, 1)}
	c.Ticks <- struct{}{}
	gone := "unix://" + filepath.Join(t.TempDir(), "no-daemon.sock")
	stalled := fakedaemon.StartUnix(t, c)
	addrs := fakedaemon.StartUnix(t, a) + "," + fakedaemon.StartUnix(t, b) + "," + stalled + "," + gone

	var errOut strings.Builder
	root := NewRootCmd(genericiooptions.IOStreams{In: tty, Out: tty, ErrOut: &errOut})
	root.SetArgs([]string{"top", "dns", "--daemon", addrs, "--interval", "200ms"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	step := func(what, keys string, ok func(string) bool) string {
		t.Helper()
		if keys != "" {
			if _, err := ptm.WriteString(keys); err != nil {
				t.Fatal(err)
			}
		}
		text, err := screen.WaitFor(20*time.Second, ok)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return text
	}
	has := func(s ...string) func(string) bool {
		return func(text string) bool {
			for _, w := range s {
				if strings.HasPrefix(w, "!") {
					if strings.Contains(text, w[1:]) {
						return false
					}
				} else if !strings.Contains(text, w) {
					return false
				}
			}
			return true
		}
	}
	// rowOrder: the first screen line holding each of the names, in order.
	before := func(text, first, second string) bool {
		i, j := strings.Index(text, first), strings.Index(text, second)
		return i >= 0 && j >= 0 && i < j
	}

	text := step("first frame", "", has("group: pod", "sort: qps", "nodes: 2 answering, 1 missing, 1 stale", gone+" missing", stalled+" stale",
		"window: rates over", "crawler-1", "coreapi-1", "NAMESPACE"))
	if !before(text, "crawler-1", "coreapi-1") {
		t.Errorf("sorted by qps, crawler (100/s a node) comes before coreapi (1/s):\n%s", text)
	}
	text = step("sort by name", "a", has("sort: name"))
	if !before(text, "coreapi-1", "crawler-1") {
		t.Errorf("sorted by name, coreapi comes first:\n%s", text)
	}
	step("type a filter", "/core", has("filter: core_"))
	step("apply the filter", "api\r", has("filter: coreapi", "coreapi-1", "!crawler-1"))
	step("esc clears the filter", "\x1b", has("!filter:", "coreapi-1", "crawler-1"))
	step("group by workload", "g", has("group: workload", "WORKLOAD", "deployment/crawler", "!crawler-1"))
	for _, srv := range []*fakedaemon.Server{a, b} {
		reqs := srv.Requests()
		if len(reqs) != 2 || reqs[1].GetGroupBy() != isoobsv1.GroupBy_GROUP_BY_WORKLOAD {
			t.Errorf("%s: requests %v, want a second stream grouped by workload", srv.Node, reqs)
		}
	}
	step("esc goes back to pods", "\x1b", has("group: pod", "crawler-1", "coreapi-1"))
	if reqs := a.Requests(); len(reqs) != 3 || reqs[2].GetGroupBy() != isoobsv1.GroupBy_GROUP_BY_POD {
		t.Errorf("requests after esc: %v", reqs)
	}
	step("q quits", "q", func(text string) bool { return !strings.Contains(text, "group:") })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("top dns ended with %v\nstderr: %s", err, errOut.String())
		}
	case <-ctx.Done():
		t.Fatal("q did not end the view")
	}
}
