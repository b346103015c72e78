package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/isoobs/isoobs/plugin/internal/fakedaemon"
	"github.com/isoobs/isoobs/plugin/top"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// runCmd runs `kubectl isoobs ARGS` and returns stdout, stderr and the error.
func runCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	root := NewRootCmd(streams)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

func TestTopDNSFlagValidation(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string // substrings of the error
	}{
		{"cluster mode without an API server", []string{"--server", "https://127.0.0.1:1", "--once"}, []string{"cannot reach the Kubernetes API server", "--daemon ADDR", "--local"}},
		{"node with daemon", []string{"--daemon", ":1", "--node", "n1"}, []string{"--node picks daemon pods in cluster mode"}},
		{"bad daemon selector", []string{"--daemon-selector", "a in (b"}, []string{`invalid --daemon-selector "a in (b"`}},
		{"bad daemon port", []string{"--daemon-port", "0"}, []string{"--daemon-port 0 is not a port"}},
		{"bad sort", []string{"--daemon", ":1", "--sort", "bogus"}, []string{`invalid --sort "bogus"`, "qps, queries, nxdomain, servfail, timeouts, errors, latency, malformed, name"}},
		{"bad group-by", []string{"--daemon", ":1", "--group-by", "team"}, []string{`invalid --group-by "team"`, "pod, workload, namespace, qname, node"}},
		{"bad output", []string{"--daemon", ":1", "-o", "jsonpath={}"}, []string{"invalid -o", "wide, json, yaml"}},
		{"once and duration", []string{"--daemon", ":1", "--once", "--duration", "5s"}, []string{"--once and --duration", "--duration 10s"}},
		{"namespace and all", []string{"--daemon", ":1", "-n", "tenant-jobs", "-A"}, []string{"-n tenant-jobs and -A conflict", "drop -A"}},
		{"daemon and local", []string{"--daemon", ":1", "--local"}, []string{"--daemon and --local", "use --daemon ADDR"}},
		{"cgroup-root without local", []string{"--daemon", ":1", "--cgroup-root", "/sys/fs/cgroup"}, []string{"--cgroup-root only applies with --local"}},
		{"node-name without local", []string{"--daemon", ":1", "--node-name", "n1"}, []string{"--node-name only applies with --local"}},
		{"zero interval", []string{"--daemon", ":1", "--interval", "0s"}, []string{"--interval 0s must be positive"}},
		{"tiny interval", []string{"--daemon", ":1", "--interval", "10ms"}, []string{"too short", "100ms"}},
		{"negative duration", []string{"--daemon", ":1", "--duration", "-1s"}, []string{"--duration -1s is negative"}},
		{"negative limit", []string{"--daemon", ":1", "--limit", "-1"}, []string{"--limit 0 to show all"}},
		{"negative top-names", []string{"--daemon", ":1", "--top-names", "-2"}, []string{"--top-names 0 to hide"}},
		{"bad selector", []string{"--daemon", ":1", "-l", "app in (crawler"}, []string{`invalid -l "app in (crawler"`, "example: -l app=crawler"}},
		{"daemon without port", []string{"--daemon", "localhost"}, []string{`invalid --daemon "localhost"`, "host:port", "unix:///"}},
		{"daemon with http", []string{"--daemon", "http://localhost:80"}, []string{"only unix:// sockets or plain host:port"}},
		{"pod namespace conflict", []string{"--daemon", ":1", "-n", "a", "--pod", "b/web-1"}, []string{`names namespace "b" but -n is "a"`}},
		{"stray argument", []string{"--daemon", ":1", "crawler"}, []string{`unknown command "crawler"`}},
		{"bad duration syntax", []string{"--daemon", ":1", "--duration", "ten"}, []string{`invalid argument "ten" for "--duration"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runCmd(t, append([]string{"top", "dns"}, tt.args...)...)
			if err == nil {
				t.Fatalf("want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// crawlerFrame is what the fake daemon sends: one crawler row whose counts
// grow by 100 queries per frame.
func crawlerFrame(req *isoobsv1.TopRequest, n int, start, now time.Time) *isoobsv1.TopFrame {
	q := uint64(n) * 100
	f := &isoobsv1.TopFrame{Rows: []*isoobsv1.DNSRow{{
		Namespace: "tenant-jobs", Pod: "crawler-1", PodUid: "u1", Workload: "crawler", WorkloadKind: "Deployment", Cgroup: "/kubepods/pu1",
		Queries: q, Qps: 100, Responses: q, Noerror: q / 4, Nxdomain: q - q/4,
		LatencyLog2Us: []uint64{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, q}, // all in [1024, 2048) µs
		TopNames:      []*isoobsv1.NameCount{{Name: "jobs.example.com", Queries: q, Nxdomain: q - q/4}},
	}, {
		Namespace: "tenant-jobs", Pod: "coreapi-1", PodUid: "u2", Workload: "coreapi", WorkloadKind: "Deployment",
		Queries: uint64(n), Qps: 1, Responses: uint64(n), Noerror: uint64(n),
	}}}
	if n == 0 {
		f.Rows = nil
	}
	return fakedaemon.Stamp(f, req, start, now)
}

func TestTopDNSOnceJSONAgainstGRPCDaemon(t *testing.T) {
	srv := &fakedaemon.Server{Node: "node-a", Frame: crawlerFrame}
	addr := fakedaemon.StartUnix(t, srv)
	out, errOut, err := runCmd(t, "top", "dns", "--daemon", addr, "--once", "-o", "json", "--interval", "100ms",
		"-n", "tenant-jobs", "-l", "app=crawler", "--group-by", "pod", "--top-names", "5", "--sort", "nxdomain", "--limit", "1")
	if err != nil {
		t.Fatalf("top dns --once: %v\nstderr: %s", err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 {
		t.Fatalf("--once must print exactly one frame, got %d lines:\n%s", len(lines), out)
	}
	var f top.Frame
	if err := json.Unmarshal([]byte(lines[0]), &f); err != nil {
		t.Fatal(err)
	}
	// The fake's first frame (n=0) is empty; --once prints it as is, with
	// "rows": [] rather than null so consumers can iterate without checks.
	if !strings.Contains(lines[0], `"rows":[]`) {
		t.Errorf("empty frame must carry \"rows\":[]: %s", lines[0])
	}
	if len(f.Rows) != 0 || f.Sort != "nxdomain" || f.GroupBy != "pod" || len(f.Nodes) != 1 || f.Nodes[0] != "node-a" {
		t.Errorf("frame = %+v", f)
	}
	reqs := srv.Requests()
	if len(reqs) != 1 {
		t.Fatalf("daemon got %d requests", len(reqs))
	}
	r := reqs[0]
	if r.GetNamespace() != "tenant-jobs" || r.GetLabelSelector() != "app=crawler" || r.GetGroupBy() != isoobsv1.GroupBy_GROUP_BY_POD ||
		r.GetTopNames() != 5 || r.GetDimension() != isoobsv1.Dimension_DIMENSION_DNS || r.GetSinceStreamStart() ||
		r.GetInterval().AsDuration() != 100*time.Millisecond || r.GetLimit() != 0 || r.GetSort() != "nxdomain" {
		t.Errorf("request = %v", r)
	}
}

func TestTopDNSDurationCountsOverTheWindow(t *testing.T) {
	// The daemon sends an empty frame at once (span 0), then one per
	// interval; --duration must skip the first and print the one covering D.
	srv := &fakedaemon.Server{Node: "node-a", Frame: crawlerFrame, Immediate: true}
	addr := fakedaemon.StartUnix(t, srv)
	start := time.Now()
	out, errOut, err := runCmd(t, "top", "dns", "--daemon", addr, "--duration", "300ms", "-o", "json")
	if err != nil {
		t.Fatalf("top dns --duration: %v\nstderr: %s", err, errOut)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("printed after %s, before the 300ms window closed", took)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 {
		t.Fatalf("--duration must print exactly one frame, got:\n%s", out)
	}
	var f top.Frame
	if err := json.Unmarshal([]byte(lines[0]), &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Rows) != 2 {
		t.Fatalf("rows = %+v", f.Rows)
	}
	c := f.Rows[0] // sorted by qps
	if c.Pod != "crawler-1" || c.Queries != 100 || c.NXDomain != 75 || c.NoError != 25 || c.Node != "node-a" {
		t.Errorf("crawler row = %+v", c)
	}
	if want := 1.024 * 1.5; c.LatencyP50Ms != want {
		t.Errorf("p50 = %v, want %v", c.LatencyP50Ms, want)
	}
	if span := f.Time.Sub(f.Since); span < 270*time.Millisecond {
		t.Errorf("frame covers %s, want about 300ms", span)
	}
	r := srv.Requests()[0]
	if !r.GetSinceStreamStart() || r.GetInterval().AsDuration() != 300*time.Millisecond {
		t.Errorf("request = %v", r)
	}
}

func TestTopDNSStreamsTablesUntilDaemonEnds(t *testing.T) {
	frames := 0
	srv := &fakedaemon.Server{Node: "node-a", Frame: func(req *isoobsv1.TopRequest, n int, start, now time.Time) *isoobsv1.TopFrame {
		if n >= 3 {
			return nil
		}
		frames++
		return crawlerFrame(req, n+1, start, now)
	}}
	addr := fakedaemon.StartUnix(t, srv)
	out, errOut, err := runCmd(t, "top", "dns", "--daemon", addr, "--interval", "100ms", "-o", "wide")
	if err != nil {
		t.Fatalf("top dns: %v\nstderr: %s", err, errOut)
	}
	tables := strings.Split(strings.TrimSpace(out), "\n\n")
	if len(tables) != 3 {
		t.Fatalf("want 3 tables, got %d:\n%s", len(tables), out)
	}
	last := strings.Split(tables[2], "\n")
	if !strings.HasPrefix(last[0], "NAMESPACE") || !strings.Contains(last[0], "CGROUP") || !strings.Contains(last[0], "POD-UID") {
		t.Errorf("wide header = %q", last[0])
	}
	fields := strings.Fields(last[1])
	// NAMESPACE POD WORKLOAD NODE QPS QUERIES NXDOMAIN SERVFAIL TIMEOUTS REFUSED MALFORMED RESPONSES UNSOLICITED EVICTED P50 ...
	if fields[1] != "crawler-1" || fields[4] != "100.0" || fields[5] != "300" || fields[6] != "225" || fields[11] != "300" || fields[14] != "1.54ms" {
		t.Errorf("last frame crawler row = %q", last[1])
	}
	if !strings.Contains(errOut, "daemon closed the stream") {
		t.Errorf("stderr should say the daemon ended the stream: %q", errOut)
	}
}

func TestTopDNSOnceTimesOutOnSilentDaemon(t *testing.T) {
	srv := &fakedaemon.Server{Node: "n", Frame: crawlerFrame, Ticks: make(chan struct{})} // never ticks
	addr := fakedaemon.StartUnix(t, srv)
	streams, _, _, _ := genericiooptions.NewTestIOStreams()
	o := NewTopDNSOptions(genericclioptions.NewConfigFlags(false), streams)
	o.DaemonAddrs, o.Once, o.Interval, o.firstFrameWait = []string{addr}, true, 100*time.Millisecond, 200*time.Millisecond
	if err := o.Complete(nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	err := o.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no frame from the isoobs daemon within 300ms") {
		t.Errorf("want a timeout error naming the wait, got %v", err)
	}
}

func TestTopDNSOnceDaemonClosesEarly(t *testing.T) {
	srv := &fakedaemon.Server{Node: "n", Frame: func(*isoobsv1.TopRequest, int, time.Time, time.Time) *isoobsv1.TopFrame { return nil }}
	addr := fakedaemon.StartUnix(t, srv)
	_, _, err := runCmd(t, "top", "dns", "--daemon", addr, "--once")
	if err == nil || !strings.Contains(err.Error(), "closed the stream before sending a frame") {
		t.Errorf("got %v", err)
	}
}

func TestTopDNSLocalWithoutKubeconfig(t *testing.T) {
	srv := &fakedaemon.Server{Frame: crawlerFrame}
	var gotCfg LocalConfig
	stopped := false
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	flags := genericclioptions.NewConfigFlags(false)
	missing := t.TempDir() + "/no-kubeconfig"
	flags.KubeConfig = &missing
	o := NewTopDNSOptions(flags, streams)
	o.localEngine = func(_ context.Context, cfg LocalConfig) (isoobsv1.DaemonServer, func(), error) {
		gotCfg = cfg
		srv.Node = cfg.NodeName
		return srv, func() { stopped = true }, nil
	}
	o.Local, o.NodeName, o.CgroupRoot, o.Once, o.Output, o.Interval = true, "lab-node", "/sys/fs/cgroup/unified", true, "json", 100*time.Millisecond
	if err := o.Complete(nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := o.Run(context.Background()); err != nil {
		t.Fatalf("--local: %v", err)
	}
	if gotCfg.NodeName != "lab-node" || gotCfg.CgroupRoot != "/sys/fs/cgroup/unified" || gotCfg.RESTConfig != nil || gotCfg.Interval != 100*time.Millisecond {
		t.Errorf("engine config = %+v", gotCfg)
	}
	if !stopped {
		t.Error("the local engine was not stopped")
	}
	if n := strings.Count(errOut.String(), "no usable kubeconfig"); n != 1 {
		t.Errorf("want the no-kubeconfig warning once on stderr, got %d: %q", n, errOut)
	}
	if !srv.Requests()[0].GetIncludeUnresolved() {
		t.Error("without names, rows without a pod must be asked for")
	}
	if !strings.Contains(out.String(), `"nodes":["lab-node"]`) {
		t.Errorf("stdout = %s", out)
	}
}

func TestVersionAndHelp(t *testing.T) {
	out, _, err := runCmd(t, "version")
	if err != nil || !strings.HasPrefix(out, "kubectl-isoobs ") {
		t.Errorf("version: %q %v", out, err)
	}
	out, _, err = runCmd(t, "version", "-o", "json")
	var v VersionInfo
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || v.GoVersion == "" || v.Platform == "" {
		t.Errorf("version -o json: %q %v", out, err)
	}
	out, _, err = runCmd(t, "top", "dns", "--help")
	if err != nil || !strings.Contains(out, "kubectl isoobs top dns --daemon") || !strings.Contains(out, "--duration") || !strings.Contains(out, "--kubeconfig") {
		t.Errorf("help: %v\n%s", err, out)
	}
	var buf bytes.Buffer
	buf.WriteString(out)
	if !strings.Contains(buf.String(), "Usage:\n  kubectl isoobs top dns [flags]") {
		t.Errorf("usage line should read as a kubectl plugin:\n%s", out)
	}
}
