package plugin

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/isoobs/isoobs/plugin/internal/fakedaemon"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

func TestTopDNSTrace(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 22, 0, 0, 0, time.UTC)
	events := []*isoobsv1.DNSEvent{
		{Time: timestamppb.New(t0), Node: "node-a", Namespace: "tenant-jobs", Pod: "crawler-1", Container: "crawler", Kind: "query",
			Qname: "x1.crawl.example", Qtype: "A", Server: "10.96.0.10:53", Protocol: "udp", DnsId: 7},
		{Time: timestamppb.New(t0.Add(2 * time.Millisecond)), Node: "node-a", Namespace: "tenant-jobs", Pod: "crawler-1", Container: "crawler", Kind: "answer",
			Qname: "x1.crawl.example", Qtype: "A", Rcode: "NXDOMAIN", LatencyMs: 1.5, Server: "10.96.0.10:53", Protocol: "udp", DnsId: 7, DroppedBefore: 3},
	}
	a := &fakedaemon.Server{Node: "node-a", TracePod: "tenant-jobs/crawler-1", TraceEvents: events}
	b := &fakedaemon.Server{Node: "node-b"}
	addrs := fakedaemon.StartUnix(t, a) + "," + fakedaemon.StartUnix(t, b)

	out, errOut, err := runCmd(t, "top", "dns", "--daemon", addrs, "--pod", "tenant-jobs/crawler-1", "--trace", "--duration", "500ms", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 JSON lines, got:\n%s", out)
	}
	var ev traceEvent
	if err := json.Unmarshal([]byte(lines[1]), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Kind != "answer" || ev.QName != "x1.crawl.example" || ev.RCode != "NXDOMAIN" || ev.LatencyMs != 1.5 || ev.Container != "crawler" ||
		ev.DroppedBefore != 3 || !ev.Time.Equal(t0.Add(2*time.Millisecond)) || ev.Server != "10.96.0.10:53" {
		t.Errorf("answer line %s -> %+v", lines[1], ev)
	}
	if errOut != "" {
		t.Errorf("stderr: %q (a node without the pod is not a warning)", errOut)
	}

	out, _, err = runCmd(t, "top", "dns", "--daemon", addrs, "-n", "tenant-jobs", "--pod", "crawler-1", "--trace", "--duration", "500ms")
	if err != nil {
		t.Fatal(err)
	}
	table := strings.Split(strings.TrimSpace(out), "\n")
	if len(table) != 4 || !strings.HasPrefix(table[0], "TIME") || !strings.Contains(table[2], "3 messages not shown") ||
		strings.Join(strings.Fields(table[3])[1:], " ") != "node-a crawler answer A x1.crawl.example NXDOMAIN 0 1.50ms 10.96.0.10:53" {
		t.Errorf("table:\n%s", out)
	}

	if _, _, err := runCmd(t, "top", "dns", "--daemon", addrs, "-n", "tenant-jobs", "--pod", "gone", "--trace", "--duration", "2s"); err == nil ||
		!strings.Contains(err.Error(), "pod tenant-jobs/gone is on none of the 2 node(s) asked") {
		t.Errorf("pod on no node: %v", err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--trace"}, "--trace follows one pod"},
		{[]string{"--trace", "-A", "--pod", "p"}, "--trace follows one pod"},
		{[]string{"-n", "x", "--pod", "p", "--trace", "--trace-sample", "3"}, "a power of two"},
		{[]string{"-n", "x", "--pod", "p", "--trace-sample", "4"}, "--trace-sample goes with --trace"},
		{[]string{"-n", "x", "--pod", "p", "--trace", "--once"}, "drop --once"},
		{[]string{"-n", "x", "--pod", "p", "--trace", "-o", "yaml"}, "-o json"},
	} {
		_, _, err := runCmd(t, append([]string{"top", "dns", "--daemon", ":1"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want …%s…", tc.args, err, tc.want)
		}
	}
}
