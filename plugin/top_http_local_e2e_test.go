//go:build linux

package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/isoobs/isoobs/cgroupv2"
	"github.com/isoobs/isoobs/plugin/top"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/hubblereplay"
	"github.com/isoobs/isoobs/testlab/needroot"
)

// TestTopHTTPLocalCountsReplayExactly runs `kubectl isoobs top http --local --hubble-server
// <peer>` with the real daemon engine in this process (its eBPF probes on a cgroup root of its
// own) reading a Hubble peer that replays TestTopHTTPOnLab's set, flows shaped as Cilium's
// proxy emits them: --once counts exactly the 1,000 requests (37 5xx, 74 4xx of which 18 denied,
// 889 2xx; the recruiter's 100 also logged at its egress proxy counted once) per workload and
// pod. Then 200 more requests arrive 3 s later, and --since 2s counts exactly those 200 (8 5xx,
// 14 4xx of which 3 denied), --since 1m all 1,200, from the engine's history.
func TestTopHTTPLocalCountsReplayExactly(t *testing.T) {
	needroot.Require(t, "--local loads eBPF programs")
	v2, err := cgroupv2.Detect()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(v2, fmt.Sprintf("isoobs-http-local-e2e-%d", os.Getpid()))
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(root); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("removing cgroup %s: %v", root, err)
		}
	})

	// The Hubble peer: Cilium's observer API on a unix socket, replaying what it is given.
	sock := filepath.Join(t.TempDir(), "hubble.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	peer := hubblereplay.NewServer(hubblereplay.Options{NodeName: httpE2ENodeA, MaxFlows: 10000})
	gs := grpc.NewServer()
	peer.Register(gs)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// One engine for every run below (as the DNS --local test does), so the flows replayed
	// while it follows the peer are the ones each run counts.
	newOptions := func(args ...string) (*TopHTTPOptions, func() (top.HTTPFrame, string)) {
		streams, _, out, errOut := genericiooptions.NewTestIOStreams()
		flags := genericclioptions.NewConfigFlags(false)
		noKubeconfig := filepath.Join(t.TempDir(), "none")
		flags.KubeConfig = &noKubeconfig
		o := &TopHTTPOptions{src: NewTopDNSOptions(flags, streams), Sort: top.HTTPSortRequests, GroupBy: top.GroupByPod, Paths: 3}
		fs := pflag.NewFlagSet("top http", pflag.ContinueOnError)
		o.src.Hubble.Hubble.AddFlags(fs, "")
		fs.DurationVar(&o.src.Since, "since", 0, "")
		fs.StringVar(&o.GroupBy, "group-by", o.GroupBy, "")
		if err := fs.Parse(append([]string{"--hubble-server", "unix://" + sock}, args...)); err != nil {
			t.Fatal(err)
		}
		o.src.Local, o.src.CgroupRoot, o.src.NodeName, o.src.Once, o.src.Output, o.src.Interval, o.src.AllNamespaces = true, root, "e2e-node", true, "json", 200*time.Millisecond, true
		if err := o.src.Complete(nil, nil); err != nil {
			t.Fatal(err)
		}
		if err := o.Validate(); err != nil {
			t.Fatal(err)
		}
		return o, func() (top.HTTPFrame, string) {
			t.Helper()
			if err := o.Run(ctx); err != nil {
				t.Fatalf("top http --local --hubble-server %s --once %s: %v\nstderr: %s", sock, strings.Join(args, " "), err, errOut)
			}
			var f top.HTTPFrame
			if err := json.Unmarshal(out.Bytes(), &f); err != nil {
				t.Fatalf("output is not one JSON frame: %v\n%s", err, out)
			}
			return f, errOut.String()
		}
	}
	engine, _ := newOptions()
	sources, closeSources, err := engine.src.startLocal(ctx)
	if err != nil {
		t.Fatalf("starting the local engine: %v", err)
	}
	defer closeSources()
	open := func(o *TopHTTPOptions) {
		o.src.openSources = func(context.Context) ([]top.Source, func(), error) { return sources, func() {}, nil }
	}
	// A follower starts at the end of the peer's buffer: replay once the engine follows.
	testlab.WaitFor(t, 30*time.Second, func() error {
		if _, following := peer.Streams(); following < 1 {
			return errors.New("the --local engine does not follow the Hubble peer yet")
		}
		return nil
	})

	pods := map[string]hubblereplay.Pod{}
	for i, p := range []struct{ key, name, app string }{
		{"coreapi-a", "coreapi-7d4f9c8b6-a", "coreapi"},
		{"coreapi-b", "coreapi-7d4f9c8b6-b", "coreapi"},
		{"crawler", "crawler-5fd66fc4f9-kc4k2", "crawler"},
		{"recruiter", "recruiter-79467dc55d-ffbw8", "recruiter"},
	} {
		pods[p.key] = hubblereplay.Pod{Namespace: "tenant-jobs", Name: p.name, Workload: p.app, WorkloadKind: "Deployment", Identity: uint32(48000 + i),
			Labels: map[string]string{"app": p.app}, IP: fmt.Sprintf("10.244.1.%d", 30+i)}
	}
	var published uint64
	replay := func(set []httpE2EReq) (requests, s5xx, s4xx, denied uint64) {
		for _, r := range set {
			peer.PublishFlows(r.x.Flows()...)
			published += 2
			if r.egress {
				e := r.x
				e.Node, e.Egress = httpE2ENodeB, true
				peer.PublishFlows(e.Flows()...)
				published += 2
			}
			requests++
			switch {
			case r.x.Code >= 500:
				s5xx++
			case r.x.Denied:
				s4xx++
				denied++
			case r.x.Code >= 400:
				s4xx++
			}
		}
		testlab.WaitFor(t, 30*time.Second, func() error {
			st, err := sources[0].Client.Status(ctx, &isoobsv1.StatusRequest{})
			if err != nil {
				return err
			}
			if got := st.GetHubble().GetHttpFlows(); got != published {
				return fmt.Errorf("the engine received %d HTTP flows, want %d", got, published)
			}
			return nil
		})
		return
	}
	first := httpE2ESet(pods)
	if n, s5, s4, d := replay(first); n != httpE2ERequests || s5 != httpE2E5xx || s4 != httpE2E4xx || d != httpE2EDenied || published != 2200 {
		t.Fatalf("replayed %d requests (%d 5xx, %d 4xx, %d denied) in %d flows; want 1000, 37, 74, 18 in 2200", n, s5, s4, d, published)
	}

	// --once, by workload: the one frame since the engine started holds every request once.
	o, run := newOptions("--group-by", "workload")
	open(o)
	f, stderr := run()
	if len(f.Rows) != 1 || f.LookBackSeconds != 0 {
		t.Fatalf("by workload: %+v\nstderr: %s", f.Rows, stderr)
	}
	r := f.Rows[0]
	if r.Workload != "coreapi" || r.Pods != 2 || r.Requests != httpE2ERequests || r.Responses != httpE2ERequests || r.Status5xx != httpE2E5xx ||
		r.Status4xx != httpE2E4xx || r.Denied != httpE2EDenied || r.Status2xx != httpE2ERequests-httpE2E5xx-httpE2E4xx || r.ResponsesWithoutLatency != 0 || r.Direction != "ingress" {
		t.Errorf("coreapi row: %+v", r)
	}
	httpE2EInBucket(t, "p50", r.LatencyP50Ms, 200+37*499)
	httpE2EInBucket(t, "p99", r.LatencyP99Ms, 200+37*989)
	// By pod: 600 and 400; the clients: the recruiter's 100 from its own egress proxy.
	o, run = newOptions()
	open(o)
	f, _ = run()
	got := map[string]uint64{}
	for _, row := range f.Rows {
		got[row.Pod] = row.Requests
	}
	if len(got) != 2 || got[pods["coreapi-a"].Name] != 600 || got[pods["coreapi-b"].Name] != 400 || f.Total.Requests != httpE2ERequests || f.Total.Status5xx != httpE2E5xx {
		t.Errorf("by pod: %v, total %d (5xx %d)", got, f.Total.Requests, f.Total.Status5xx)
	}
	o, run = newOptions()
	o.Clients = true
	open(o)
	f, _ = run()
	clients := map[string]string{}
	for _, row := range f.Rows {
		clients[row.Pod] = fmt.Sprintf("%d/%s", row.Requests, row.Direction)
	}
	if len(clients) != 2 || clients[pods["crawler"].Name] != "900/ingress" || clients[pods["recruiter"].Name] != "100/egress" {
		t.Errorf("clients: %v", clients)
	}

	// 3 s later, 200 more requests; a 2 s look-back holds exactly those.
	time.Sleep(3 * time.Second)
	second := httpE2ESet(pods)[:200]
	n2, s5, s4, d2 := replay(second)
	if n2 != 200 || s5 != 8 || s4 != 14 || d2 != 3 || published != 2640 {
		t.Fatalf("second batch: %d requests, %d 5xx, %d 4xx, %d denied, %d flows in all; want 200, 8, 14, 3, 2640", n2, s5, s4, d2, published)
	}
	o, run = newOptions("--since", "2s", "--group-by", "workload")
	open(o)
	f, stderr = run()
	if f.LookBackSeconds != 2 || len(f.Rows) != 1 {
		t.Fatalf("--since 2s: look-back %v, rows %+v\nstderr: %s", f.LookBackSeconds, f.Rows, stderr)
	}
	r = f.Rows[0]
	t.Logf("--since 2s: %d requests, 5xx %d, 4xx %d (denied %d) over %.2fs, first seen %v, last seen %v", r.Requests, r.Status5xx, r.Status4xx, r.Denied, f.IntervalSeconds, r.FirstSeen, r.LastSeen)
	if r.Requests != 200 || r.Responses != 200 || r.Status5xx != 8 || r.Status4xx != 14 || r.Denied != 3 || r.Status2xx != 178 || r.Pods != 2 ||
		r.FirstSeen == nil || r.LastSeen == nil || r.LastSeen.Before(*r.FirstSeen) || f.Since.After(*r.FirstSeen) {
		t.Errorf("--since 2s: %+v, want the second batch's 200 (8 5xx, 14 4xx, 3 denied)", r)
	}
	var paths uint64
	for _, p := range r.Paths {
		paths += p.Requests
	}
	if paths+r.PathsOther.Requests != 200 {
		t.Errorf("--since 2s paths: %d + other %d, want 200", paths, r.PathsOther.Requests)
	}
	o, run = newOptions("--since", "1m", "--group-by", "workload")
	open(o)
	f, stderr = run()
	if len(f.Rows) != 1 || f.Rows[0].Requests != 1200 || f.Rows[0].Status5xx != httpE2E5xx+8 || f.Rows[0].Status4xx != httpE2E4xx+14 || f.Rows[0].Denied != httpE2EDenied+3 {
		t.Errorf("--since 1m: %+v, want every request of both batches (1200, 45 5xx, 88 4xx, 21 denied)", f.Rows)
	}
	if !strings.Contains(stderr, "look-back: history covers") {
		t.Errorf("--since 1m on an engine a few seconds old should say how much history it had; stderr:\n%s", stderr)
	}

	// The command line as typed: `top http --local --hubble-server <peer> --duration 4s`, an
	// engine of its own, counts exactly the 100 requests replayed while it runs.
	root2 := root + "-cmd"
	if err := os.MkdirAll(root2, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(root2)
	type result struct {
		out, errOut string
		err         error
	}
	done := make(chan result, 1)
	go func() {
		out, errOut, err := runCmd(t, "top", "http", "--local", "--hubble-server", "unix://"+sock, "--cgroup-root", root2, "--node-name", "e2e-node",
			"--kubeconfig", filepath.Join(t.TempDir(), "none"), "--duration", "4s", "--interval", "200ms", "-o", "json", "--group-by", "workload")
		done <- result{out, errOut, err}
	}()
	testlab.WaitFor(t, 30*time.Second, func() error {
		if _, following := peer.Streams(); following < 2 {
			return errors.New("the command's --local engine does not follow the Hubble peer yet")
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // its stream is open: counting from here
	third := httpE2ESet(pods)[:100]
	if n, s5, s4, d := replay(third); n != 100 || s5 != 4 || s4 != 8 || d != 2 {
		t.Fatalf("third batch: %d requests, %d 5xx, %d 4xx, %d denied; want 100, 4, 8, 2", n, s5, s4, d)
	}
	res := <-done
	if res.err != nil {
		t.Fatalf("top http --local --duration 4s: %v\nstderr: %s", res.err, res.errOut)
	}
	t.Logf("top http --local --duration 4s stderr:\n%s", res.errOut)
	if !strings.Contains(res.errOut, "warning: no usable kubeconfig") || !strings.Contains(res.errOut, "which namespaces lack L7 HTTP visibility is not checked") || strings.Contains(res.errOut, "cgroups without pod names") {
		t.Errorf("--local without a kubeconfig should say what top http misses (not the probes' pod names); stderr:\n%s", res.errOut)
	}
	var cf top.HTTPFrame
	if err := json.Unmarshal([]byte(res.out), &cf); err != nil {
		t.Fatalf("output is not one JSON frame: %v\n%s", err, res.out)
	}
	if len(cf.Rows) != 1 || cf.Rows[0].Requests != 100 || cf.Rows[0].Status5xx != 4 || cf.Rows[0].Status4xx != 8 || cf.Rows[0].Denied != 2 || cf.Rows[0].Status2xx != 88 {
		t.Errorf("--duration 4s: %+v, want the third batch's 100 (4 5xx, 8 4xx, 2 denied)\nstderr: %s", cf.Rows, res.errOut)
	}
}
