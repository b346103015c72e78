package hubblereplay_test

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	flowpb "github.com/isoobs/isoobs/proto/observer/flow"
	observerpb "github.com/isoobs/isoobs/proto/observer/observer"
	"github.com/isoobs/isoobs/testlab/controlplane"
	"github.com/isoobs/isoobs/testlab/hubblereplay"
)

// hubbleVersion must match CILIUM_VERSION in testlab/scripts/build-bins.sh.
const hubbleVersion = "v1.20.2"

// hubbleCLI returns the real hubble CLI, building it once with build-bins.sh (~80 s cold).
func hubbleCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(controlplane.CacheDir(), "bin", "hubble-"+hubbleVersion, "hubble")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("bash", filepath.Join(root, "testlab", "scripts", "build-bins.sh"), "hubble").CombinedOutput()
	if err != nil {
		t.Fatalf("building the hubble CLI (testlab/scripts/build-bins.sh hubble): %v\n%s", err, out)
	}
	return bin
}

var (
	crawler = hubblereplay.Pod{Namespace: "tenant-jobs", Name: "crawler-7d9f8b6c5-x2k4q", Workload: "crawler", WorkloadKind: "Deployment",
		Identity: 48213, Labels: map[string]string{"app": "crawler"}, IP: "10.244.1.17"}
	coredns = hubblereplay.Pod{Namespace: "kube-system", Name: "coredns-5d78c9869d-abcde", Workload: "coredns", WorkloadKind: "Deployment",
		Identity: 102, Labels: map[string]string{"k8s-app": "kube-dns"}, IP: "10.244.0.5"}
	coreapi = hubblereplay.Pod{Namespace: "tenant-jobs", Name: "coreapi-66f7d8c9b-z8r2m", Workload: "coreapi", WorkloadKind: "Deployment",
		Identity: 48999, Labels: map[string]string{"app": "coreapi"}, IP: "10.244.1.30"}
)

// sampleEvents are the flows of a small incident: the crawler's DNS (answered, NXDOMAIN,
// denied by policy), a policy drop, an HTTP exchange and a lost-events notice.
func sampleEvents(node string, t0 time.Time) []*observerpb.GetFlowsResponse {
	var flows []*flowpb.Flow
	x := hubblereplay.DNSExchange{Node: node, Client: crawler, Server: coredns, QType: "A", Latency: 900 * time.Microsecond}
	for i, q := range []struct {
		name   string
		rcode  uint32
		denied bool
	}{{"jobs.example.com.", 0, false}, {"nope.example.com.", 3, false}, {"jobs.example.com.", 0, false}, {"evil.example.net.", 0, true}} {
		x.Time, x.ClientPort, x.Query, x.Rcode, x.Denied = t0.Add(time.Duration(i)*time.Millisecond), uint32(50000+i), q.name, q.rcode, q.denied
		flows = append(flows, x.Flows()...)
	}
	flows = append(flows, hubblereplay.Drop(node, t0.Add(10*time.Millisecond), crawler, coreapi, "TCP", 8080, flowpb.DropReason_POLICY_DENIED))
	flows = append(flows, hubblereplay.HTTPExchange(node, t0.Add(20*time.Millisecond), crawler, coreapi, "GET", "http://coreapi:8080/jobs", 503, 3*time.Millisecond)...)
	evs := hubblereplay.Events(flows...)
	return append(evs, hubblereplay.Lost(node, t0.Add(30*time.Millisecond), flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 7))
}

// serve runs s on a unix socket until the test ends.
func serve(t *testing.T, s *hubblereplay.Server) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hubble-replay")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "hubble.sock")
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	s.Register(gs)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return "unix://" + path
}

func runHubble(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, hubbleCLI(t), args...)
	cmd.Env = append(os.Environ(), "HUBBLE_CONFIG=/dev/null", "HOME="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("hubble %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func flowsOf(evs []*observerpb.GetFlowsResponse) []*flowpb.Flow {
	var out []*flowpb.Flow
	for _, ev := range evs {
		if f := ev.GetFlow(); f != nil {
			out = append(out, f)
		}
	}
	return out
}

func sameFlows(t *testing.T, what string, got, want []*flowpb.Flow) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d flows, want %d", what, len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("%s: flow %d differs:\n got %v\nwant %v", what, i, got[i], want[i])
		}
	}
}

// TestHubbleCLIReadsReplay is the proof that the replay server speaks real Hubble: the real
// hubble CLI (v1.20.2) reads back exactly the flows written in the JSON export format.
func TestHubbleCLIReadsReplay(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the hubble CLI: not under -short (make unit)")
	}
	const node = "lab-node-a"
	t0 := time.Date(2026, 11, 3, 9, 30, 0, 0, time.UTC)
	// Written and read back in the export format, with a broken line and a line without an event.
	var export bytes.Buffer
	if err := hubblereplay.MarshalExport(&export, sampleEvents(node, t0)); err != nil {
		t.Fatal(err)
	}
	export.WriteString("{not json\n\n{\"node_name\":\"x\"}\n")
	evs, st, err := hubblereplay.ReadExport(&export)
	if err != nil {
		t.Fatal(err)
	}
	if st.Events != 11 || st.Skipped != 2 || st.Lines != 13 || len(st.Errors) != 2 {
		t.Fatalf("read stats %+v, want 11 events (10 flows + 1 lost), 2 skipped of 13 lines", st)
	}
	srv := hubblereplay.NewServer(hubblereplay.Options{NodeName: node})
	srv.Publish(evs...)
	addr := serve(t, srv)
	want := flowsOf(evs)

	// Everything in the buffer, as JSON: the same flows, field for field.
	out := runHubble(t, "observe", "--server", addr, "--all", "-o", "json")
	got, gst, err := hubblereplay.ReadExport(strings.NewReader(out))
	if err != nil || gst.Skipped != 0 {
		t.Fatalf("hubble output not in export format: %v %+v\n%s", err, gst, out)
	}
	sameFlows(t, "hubble observe --all", flowsOf(got), want)

	// Server-side filters as the CLI sends them.
	out = runHubble(t, "observe", "--server", addr, "--all", "-o", "json", "--protocol", "dns", "--verdict", "DROPPED")
	got, _, _ = hubblereplay.ReadExport(strings.NewReader(out))
	sameFlows(t, "--protocol dns --verdict DROPPED", flowsOf(got), []*flowpb.Flow{want[6]})
	out = runHubble(t, "observe", "--server", addr, "--all", "-o", "json", "--type", "drop")
	got, _, _ = hubblereplay.ReadExport(strings.NewReader(out))
	sameFlows(t, "--type drop", flowsOf(got), []*flowpb.Flow{want[7]})
	out = runHubble(t, "observe", "--server", addr, "--last", "2", "-o", "json", "--protocol", "http")
	got, _, _ = hubblereplay.ReadExport(strings.NewReader(out))
	sameFlows(t, "--last 2 --protocol http", flowsOf(got), want[8:10])
	// The compact printer (what an engineer reads) names the pods and the DNS query.
	out = runHubble(t, "observe", "--server", addr, "--all", "--protocol", "dns")
	if !strings.Contains(out, "tenant-jobs/crawler-7d9f8b6c5-x2k4q") || !strings.Contains(out, "nope.example.com.") || !strings.Contains(out, "DROPPED") {
		t.Errorf("hubble observe compact output:\n%s", out)
	}

	// hubble status checks the gRPC health service and ServerStatus.
	out = runHubble(t, "status", "--server", addr)
	if !strings.Contains(out, "Healthcheck (via "+addr+"): Ok") || !strings.Contains(out, "Current/Max Flows: 10/4,095") {
		t.Errorf("hubble status:\n%s", out)
	}
	out = runHubble(t, "list", "nodes", "--server", addr)
	if !strings.Contains(out, node) || !strings.Contains(out, "Connected") {
		t.Errorf("hubble list nodes:\n%s", out)
	}

	// Follow: new flows reach a following CLI.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, hubbleCLI(t), "observe", "--server", addr, "--follow", "-o", "json", "--protocol", "dns")
	cmd.Env = append(os.Environ(), "HUBBLE_CONFIG=/dev/null", "HOME="+t.TempDir())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// Follow without --last starts at the end of the buffer, as with Hubble: wait until the
	// CLI follows, then publish.
	var followed []*flowpb.Flow
	read := func(n int) {
		for len(followed) < n {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("hubble observe --follow ended after %d flows", len(followed))
				}
				evs, _, _ := hubblereplay.ReadExport(strings.NewReader(l))
				followed = append(followed, flowsOf(evs)...)
			case <-ctx.Done():
				t.Fatalf("hubble observe --follow: only %d of %d flows", len(followed), n)
			}
		}
	}
	for {
		if _, following := srv.Streams(); following == 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("hubble observe --follow never started following")
		}
		time.Sleep(10 * time.Millisecond)
	}
	fresh := hubblereplay.DNSExchange{Node: node, Time: t0.Add(time.Minute), Client: crawler, Server: coredns, ClientPort: 51000, Query: "fresh.example.com.", Latency: time.Millisecond}.Flows()
	srv.PublishFlows(fresh...)
	srv.PublishFlows(hubblereplay.Drop(node, t0.Add(time.Minute), crawler, coreapi, "TCP", 8080, flowpb.DropReason_POLICY_DENIED)) // filtered out
	srv.PublishFlows(fresh[0])
	read(3)
	sameFlows(t, "hubble observe --follow", followed, []*flowpb.Flow{fresh[0], fresh[1], fresh[0]})
}
