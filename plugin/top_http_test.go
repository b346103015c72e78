package plugin

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/isoobs/isoobs/plugin/internal/fakedaemon"
	"github.com/isoobs/isoobs/plugin/printers"
	"github.com/isoobs/isoobs/plugin/top"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

func TestPrintHTTPFrame(t *testing.T) {
	f := top.HTTPFrame{GroupBy: top.GroupByPod, Side: "server", Rows: []top.HTTPRow{{
		Namespace: "tenant-jobs", Pod: "coreapi-1", Workload: "coreapi", WorkloadKind: "Deployment", Node: "node-a",
		Requests: 1000, Responses: 1000, Status4xx: 74, Status5xx: 37, RequestsPerSecond: 250, LatencyP50Ms: 18.66, LatencyP95Ms: 35.3, LatencyP99Ms: 123.4,
		Paths:      []top.HTTPPath{{Method: "GET", Path: "/applicants/{id}", Requests: 500, Status5xx: 37}, {Method: "POST", Path: "/applicants", Requests: 400, Status4xx: 74}, {Method: "GET", Path: "/jobs", Requests: 90}},
		PathsOther: top.HTTPPath{Method: "*", Path: "other", Requests: 10},
	}}}
	var out bytes.Buffer
	docs := 0
	if err := printHTTPFrame(&out, f, printers.OutputTable, false, 2, &docs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("table:\n%s", out.String())
	}
	for _, want := range []string{"NAMESPACE", "POD", "REQ/S", "4XX", "5XX", "5XX%", "P50", "P95", "P99", "TOP-PATHS"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("header lacks %s: %s", want, lines[0])
		}
	}
	for _, want := range []string{"coreapi-1", "deployment/coreapi", "250.0", "1000", "74", "37", "3.7", "18.66ms", "35.30ms", "123ms",
		"GET /applicants/{id}:500/5xx37,POST /applicants:400/4xx74,..."} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row lacks %s: %s", want, lines[1])
		}
	}
	out.Reset()
	if err := printHTTPFrame(&out, f, printers.OutputWide, false, 2, &docs); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "GET /jobs:90,* other:10") || !strings.Contains(out.String(), "SEEN-AT") {
		t.Errorf("wide:\n%s", out.String())
	}
	out.Reset()
	if err := printHTTPFrame(&out, f, printers.OutputJSON, false, 2, &docs); err != nil {
		t.Fatal(err)
	}
	var decoded map[string]any
	if err := json.Unmarshal(out.Bytes(), &decoded); err != nil {
		t.Fatal(err)
	}
	row := decoded["rows"].([]any)[0].(map[string]any)
	if row["status5xx"] != 37.0 || row["pod"] != "coreapi-1" || row["latencyP95Ms"] != 35.3 || len(row["paths"].([]any)) != 3 || decoded["side"] != "server" {
		t.Errorf("json: %v", decoded)
	}
	out.Reset()
	if err := printHTTPFrame(&out, top.HTTPFrame{GroupBy: top.GroupByService}, printers.OutputTable, false, 3, &docs); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "SERVICE") || !strings.Contains(out.String(), "only pods a CiliumNetworkPolicy with http rules selects") {
		t.Errorf("empty by service:\n%s", out.String())
	}
}

func TestL7Warnings(t *testing.T) {
	w := l7Warnings([]top.L7Namespace{
		{Namespace: "tenant-blind", Pods: 3},
		{Namespace: "tenant-jobs", Pods: 4, VisiblePods: 3, Policies: []string{"tenant-jobs/coreapi-l7"}, UnseenGroups: []string{"crawler"}},
		{Namespace: "empty"},
		{Namespace: "shop", Pods: 2, VisiblePods: 2},
	})
	if len(w) != 2 || !strings.HasPrefix(w[0], "namespace tenant-jobs: 3 of 4 pods are under an L7 HTTP policy (tenant-jobs/coreapi-l7)") ||
		!strings.HasPrefix(w[1], "namespace tenant-blind has no L7 HTTP visibility") {
		t.Errorf("%q", w)
	}
}

func TestTopHTTPValidates(t *testing.T) {
	for _, args := range [][]string{{"--sort", "qps"}, {"--group-by", "qname"}, {"--daemon", "x:1", "--local"}, {"--paths", "-1"}, {"--hubble-server", "unix:///x"}, {"--local", "--hubble-server", "off"}} {
		var out, errOut bytes.Buffer
		cmd := NewCmdTopHTTP(nil, genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs(args)
		if err := cmd.Execute(); err == nil {
			t.Errorf("top http %v: accepted", args)
		}
	}
}

// TestTopHTTPSinceFlagValidation: --since is checked before any daemon is asked, in top dns's
// words (negative, too short, with --duration), and against the --local engine's history; a
// daemon's own retention comes back as a --since error.
func TestTopHTTPSinceFlagValidation(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--daemon", ":1", "--since", "-5m"}, "--since -5m0s is negative: give how far to look back, e.g. --since 5m"},
		{[]string{"--daemon", ":1", "--since", "500ms"}, "--since 500ms is too short: look back 1s or more"},
		{[]string{"--daemon", ":1", "--since", "5m", "--duration", "10s"}, "--since and --duration conflict"},
		{[]string{"--local", "--since", "20m"}, "--since 20m0s is beyond the history --local keeps (15m0s, the daemon's default --retention): look back 15m0s or less"},
	} {
		_, _, err := runCmd(t, append([]string{"top", "http"}, tt.args...)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want %q", tt.args, err, tt.want)
		}
	}
	// A daemon keeping less history than asked refuses the stream; the error names the flag.
	d := &fakedaemon.Server{Node: "node-a", EndErr: status.Error(codes.InvalidArgument, "since 20m0s is longer than the history this daemon keeps (--retention 15m0s)"),
		Frame: func(*isoobsv1.TopRequest, int, time.Time, time.Time) *isoobsv1.TopFrame { return nil }}
	_, _, err := runCmd(t, "top", "http", "--daemon", fakedaemon.StartUnix(t, d), "--since", "20m", "--once", "--interval", "100ms")
	if err == nil || !strings.Contains(err.Error(), "--since 20m0s is beyond the history a daemon keeps: since 20m0s is longer than the history this daemon keeps (--retention 15m0s); look back at most its --retention") {
		t.Errorf("daemon with 15m of history: %v", err)
	}
}

// TestTopHTTPSinceMergesFirstLastSeen: --since goes to every daemon; the coreapi workload's
// pods on two nodes merge into one row, counts added, first seen the earliest and last seen the
// latest, in JSON (lookBackSeconds, firstSeen, lastSeen) and in the table's FIRST-SEEN/LAST-SEEN.
func TestTopHTTPSinceMergesFirstLastSeen(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 3, 0, 0, 0, time.Local)
	frame := func(pod string, requests, s5xx uint64, first, last time.Time) fakedaemon.FrameFunc {
		return func(req *isoobsv1.TopRequest, n int, start, now time.Time) *isoobsv1.TopFrame {
			return fakedaemon.Stamp(&isoobsv1.TopFrame{HttpRows: []*isoobsv1.HTTPRow{{Namespace: "tenant-jobs", Pod: pod, Workload: "coreapi", WorkloadKind: "Deployment",
				Direction: "ingress", Requests: requests, Responses: requests, Status_5Xx: s5xx, Status_2Xx: requests - s5xx,
				FirstSeen: timestamppb.New(first), LastSeen: timestamppb.New(last)}}}, req, start, now)
		}
	}
	a := &fakedaemon.Server{Node: "node-a", Frame: frame("coreapi-a", 600, 22, t0.Add(100*time.Second), t0.Add(300*time.Second))}
	b := &fakedaemon.Server{Node: "node-b", Frame: frame("coreapi-b", 400, 15, t0.Add(50*time.Second), t0.Add(200*time.Second))}
	addrs := fakedaemon.StartUnix(t, a) + "," + fakedaemon.StartUnix(t, b)
	out, errOut, err := runCmd(t, "top", "http", "--daemon", addrs, "--once", "-o", "json", "--interval", "100ms", "--since", "15m", "--group-by", "workload")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	for _, srv := range []*fakedaemon.Server{a, b} {
		if r := srv.Requests()[0]; r.GetSince().AsDuration() != 15*time.Minute || r.GetSinceStreamStart() || r.GetDimension() != isoobsv1.Dimension_DIMENSION_HTTP {
			t.Errorf("%s: request %v", srv.Node, r)
		}
	}
	var f top.HTTPFrame
	if err := json.Unmarshal([]byte(out), &f); err != nil {
		t.Fatal(err)
	}
	if f.LookBackSeconds != 900 || len(f.Rows) != 1 {
		t.Fatalf("frame: look-back %v rows %+v", f.LookBackSeconds, f.Rows)
	}
	r := f.Rows[0]
	if r.Requests != 1000 || r.Status5xx != 37 || r.Pods != 2 || r.FirstSeen == nil || !r.FirstSeen.Equal(t0.Add(50*time.Second)) || !r.LastSeen.Equal(t0.Add(300*time.Second)) {
		t.Errorf("merged row: %d requests, %d 5xx, %d pods, seen %v..%v; want 1000, 37, 2, 03:00:50..03:05:00", r.Requests, r.Status5xx, r.Pods, r.FirstSeen, r.LastSeen)
	}
	out, errOut, err = runCmd(t, "top", "http", "--daemon", addrs, "--once", "--interval", "100ms", "--since", "15m", "--group-by", "workload")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "FIRST-SEEN") || !strings.Contains(lines[0], "LAST-SEEN") || !strings.Contains(lines[1], "03:00:50") || !strings.Contains(lines[1], "03:05:00") {
		t.Errorf("table:\n%s", out)
	}
	// Without --since: no look-back, no columns.
	out, _, err = runCmd(t, "top", "http", "--daemon", addrs, "--once", "--interval", "100ms")
	if err != nil || strings.Contains(out, "FIRST-SEEN") || a.Requests()[len(a.Requests())-1].GetSince() != nil {
		t.Errorf("without --since: %v\n%s", err, out)
	}
}
