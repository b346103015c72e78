package plugin

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/isoobs/isoobs/plugin/internal/fakedaemon"
	"github.com/isoobs/isoobs/plugin/internal/vtscreen"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// TestTopDNSLiveDrillDownThroughPTY: on a real pseudo-terminal, ↓ selects the second row,
// Enter traces that pod (the daemon that has it streams its messages to the screen), Esc goes
// back to the table; the first row, traced from its own node, likewise.
func TestTopDNSLiveDrillDownThroughPTY(t *testing.T) {
	ptm, tty, err := vtscreen.OpenPTY(30, 300)
	if err != nil {
		t.Fatalf("open a pty: %v", err)
	}
	defer ptm.Close()
	defer tty.Close()
	screen := vtscreen.New(30, 300)
	go func() { _, _ = io.Copy(screen, ptm) }()

	t0 := time.Date(2026, 12, 3, 23, 0, 0, 0, time.UTC)
	ev := func(pod, name, kind, rcode string, ms float64) *isoobsv1.DNSEvent {
		return &isoobsv1.DNSEvent{Time: timestamppb.New(t0), Node: "node-a", Namespace: "tenant-jobs", Pod: pod, Container: "main",
			Kind: kind, Qname: name, Qtype: "A", Rcode: rcode, LatencyMs: ms, Server: "10.96.0.10:53", Protocol: "udp"}
	}
	a := &fakedaemon.Server{Node: "node-a", Frame: crawlerFrame, TracePod: "tenant-jobs/coreapi-1",
		TraceEvents: []*isoobsv1.DNSEvent{ev("coreapi-1", "kafka.tenant-jobs.svc.cluster.local", "query", "", 0),
			ev("coreapi-1", "kafka.tenant-jobs.svc.cluster.local", "answer", "NOERROR", 0.42)}}
	b := &fakedaemon.Server{Node: "node-b", Frame: crawlerFrame, TracePod: "tenant-jobs/crawler-1",
		TraceEvents: []*isoobsv1.DNSEvent{ev("crawler-1", "x9.crawl.example", "answer", "NXDOMAIN", 1.5)}}
	addrs := fakedaemon.StartUnix(t, a) + "," + fakedaemon.StartUnix(t, b)

	var errOut strings.Builder
	root := NewRootCmd(genericiooptions.IOStreams{In: tty, Out: tty, ErrOut: &errOut})
	root.SetArgs([]string{"top", "dns", "--daemon", addrs, "--interval", "200ms"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	step := func(what, keys string, want ...string) {
		t.Helper()
		if keys != "" {
			if _, err := ptm.WriteString(keys); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := screen.WaitFor(20*time.Second, func(text string) bool {
			for _, w := range want {
				if neg, ok := strings.CutPrefix(w, "!"); ok == strings.Contains(text, neg) {
					return false
				}
			}
			return true
		}); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	step("first frame", "", "group: pod", "crawler-1", "coreapi-1", "enter: trace pod")
	step("down, enter: trace coreapi-1", "\x1b[B\r", "trace tenant-jobs/coreapi-1", "2 messages", "QNAME",
		"kafka.tenant-jobs.svc.cluster.local", "NOERROR", "0.42ms", "!group: pod")
	step("esc: back to the table", "\x1b", "group: pod", "crawler-1", "!trace tenant-jobs")
	step("up, enter: trace crawler-1 (on the other node)", "\x1b[A\r", "trace tenant-jobs/crawler-1", "x9.crawl.example", "NXDOMAIN", "1.50ms")
	step("esc: back again", "\x1b", "group: pod", "!trace tenant-jobs")
	step("q quits", "q", "!group:")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("top dns ended with %v\nstderr: %s", err, errOut.String())
		}
	case <-ctx.Done():
		t.Fatal("q did not end the view")
	}
}
