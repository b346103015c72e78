package top_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/isoobs/isoobs/plugin/internal/fakedaemon"
	"github.com/isoobs/isoobs/plugin/top"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// countingFrames sends, in frame n, one crawler row with (n+1)*perFrame
// queries, and ends after frames frames.
func countingFrames(pod string, perFrame uint64, frames int) fakedaemon.FrameFunc {
	return func(req *isoobsv1.TopRequest, n int, start, now time.Time) *isoobsv1.TopFrame {
		if n >= frames {
			return nil
		}
		q := uint64(n+1) * perFrame
		f := &isoobsv1.TopFrame{Rows: []*isoobsv1.DNSRow{{
			Namespace: "tenant-jobs", Pod: pod, PodUid: "uid-" + pod, Workload: "crawler", WorkloadKind: "Deployment",
			Queries: q, Qps: float64(perFrame), Responses: q, Nxdomain: q / 2, Noerror: q - q/2,
			LatencyLog2Us: []uint64{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, q},
		}}}
		return fakedaemon.Stamp(f, req, start, now)
	}
}

func request(interval time.Duration) *isoobsv1.TopRequest {
	return &isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DNS, GroupBy: isoobsv1.GroupBy_GROUP_BY_WORKLOAD, Interval: durationpb.New(interval)}
}

func TestStreamSingleSourceEmitsEachFrame(t *testing.T) {
	srv := &fakedaemon.Server{Node: "node-a", Frame: countingFrames("crawler-1", 100, 5)}
	client := fakedaemon.StartBufconn(t, srv)
	var got []uint64
	err := top.Stream(context.Background(), []top.Source{{Name: "node-a", Client: client}},
		top.StreamOptions{Request: request(20 * time.Millisecond), Merge: top.MergeOptions{GroupBy: top.GroupByWorkload}},
		func(f top.Frame) error {
			got = append(got, f.Rows[0].Queries)
			if len(got) == 3 {
				return top.ErrStop
			}
			return nil
		})
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if len(got) != 3 || got[0] != 100 || got[1] != 200 || got[2] != 300 {
		t.Errorf("queries per frame = %v, want [100 200 300]", got)
	}
	reqs := srv.Requests()
	if len(reqs) != 1 || reqs[0].GetGroupBy() != isoobsv1.GroupBy_GROUP_BY_WORKLOAD || reqs[0].GetDimension() != isoobsv1.Dimension_DIMENSION_DNS {
		t.Errorf("daemon got %v", reqs)
	}
}

// runStream runs Stream in the background and hands each merged frame to
// the returned channel; the error channel gets Stream's result.
func runStream(t *testing.T, sources []top.Source, maxWait time.Duration) (<-chan top.Frame, <-chan error) {
	t.Helper()
	frames := make(chan top.Frame, 16)
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		done <- top.Stream(ctx, sources,
			top.StreamOptions{Request: request(time.Hour), Merge: top.MergeOptions{GroupBy: top.GroupByWorkload}, MaxWait: maxWait},
			func(f top.Frame) error {
				frames <- f
				return nil
			})
	}()
	return frames, done
}

func next[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting")
	}
	var zero T
	return zero
}

func TestStreamMergesTwoNodes(t *testing.T) {
	a := &fakedaemon.Server{Node: "node-a", Frame: countingFrames("crawler-1", 100, 3), Ticks: make(chan struct{})}
	b := &fakedaemon.Server{Node: "node-b", Frame: countingFrames("crawler-2", 10, 3), Ticks: make(chan struct{})}
	frames, done := runStream(t, []top.Source{
		{Name: "node-a", Client: fakedaemon.StartBufconn(t, a)},
		{Name: "node-b", Client: fakedaemon.StartBufconn(t, b)},
	}, time.Hour)
	for i := range 3 {
		n := uint64(i + 1)
		a.Ticks <- struct{}{}
		b.Ticks <- struct{}{}
		// A merged frame waits for both nodes (MaxWait is an hour).
		f := next(t, frames)
		if len(f.Rows) != 1 {
			t.Fatalf("frame %d: rows %+v", i, f.Rows)
		}
		r := f.Rows[0]
		if r.Queries != 110*n || r.QPS != 110 || r.NXDomain != 55*n || r.Node != "node-a,node-b" || r.Pods != 2 {
			t.Errorf("frame %d: %+v", i, r)
		}
		if len(f.Nodes) != 2 || len(f.Warnings) != 0 {
			t.Errorf("frame %d nodes %v warnings %v", i, f.Nodes, f.Warnings)
		}
	}
	a.Ticks <- struct{}{} // end of a's stream
	b.Ticks <- struct{}{}
	if err := next(t, done); err != nil {
		t.Fatalf("Stream: %v", err)
	}
	select {
	case f := <-frames:
		t.Errorf("unexpected frame after the streams ended: %+v", f)
	default:
	}
}

func TestStreamEmitsLaggingNodesAfterMaxWait(t *testing.T) {
	a := &fakedaemon.Server{Node: "node-a", Frame: countingFrames("crawler-1", 100, 3), Ticks: make(chan struct{})}
	b := &fakedaemon.Server{Node: "node-b", Frame: countingFrames("crawler-2", 10, 3), Ticks: make(chan struct{})}
	frames, _ := runStream(t, []top.Source{
		{Name: "node-a", Client: fakedaemon.StartBufconn(t, a)},
		{Name: "node-b", Client: fakedaemon.StartBufconn(t, b)},
	}, 50*time.Millisecond)
	a.Ticks <- struct{}{}
	// node-b never answers: node-a's frame comes out alone after MaxWait.
	f := next(t, frames)
	if len(f.Rows) != 1 || f.Rows[0].Queries != 100 || f.Rows[0].Node != "node-a" {
		t.Errorf("frame: %+v", f.Rows)
	}
}

func TestStreamKeepsGoingWhenOneNodeFails(t *testing.T) {
	a := &fakedaemon.Server{Node: "node-a", Frame: countingFrames("crawler-1", 100, 2), Ticks: make(chan struct{})}
	b := &fakedaemon.Server{Node: "node-b", Frame: countingFrames("crawler-2", 10, 1), Ticks: make(chan struct{}),
		EndErr: status.Error(codes.Internal, "probe detached")}
	frames, done := runStream(t, []top.Source{
		{Name: "node-a", Client: fakedaemon.StartBufconn(t, a)},
		{Name: "node-b", Client: fakedaemon.StartBufconn(t, b)},
	}, time.Hour)
	a.Ticks <- struct{}{}
	b.Ticks <- struct{}{}
	if f := next(t, frames); f.Rows[0].Queries != 110 {
		t.Fatalf("first frame: %+v", f.Rows)
	}
	b.Ticks <- struct{}{} // node-b fails
	a.Ticks <- struct{}{}
	// Only node-a is left: its frame comes out alone, with node-b's failure.
	f := next(t, frames)
	if len(f.Rows) != 1 || f.Rows[0].Queries != 200 || f.Rows[0].Node != "node-a" {
		t.Errorf("second frame rows: %+v", f.Rows)
	}
	if len(f.Warnings) != 1 || !strings.Contains(f.Warnings[0], "node-b") || !strings.Contains(f.Warnings[0], "probe detached") {
		t.Errorf("second frame warnings: %v", f.Warnings)
	}
	a.Ticks <- struct{}{} // node-a closes cleanly
	err := next(t, done)
	if err == nil || !strings.Contains(err.Error(), "node-b") || !strings.Contains(err.Error(), "probe detached") {
		t.Fatalf("Stream must end with node-b's error once all streams ended, got %v", err)
	}
}

func TestStreamUnreachableDaemon(t *testing.T) {
	conn, err := top.DialDaemon("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	err = top.Stream(context.Background(), []top.Source{{Name: "127.0.0.1:1", Client: isoobsv1.NewDaemonClient(conn)}},
		top.StreamOptions{Request: request(time.Second)}, func(top.Frame) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "cannot reach the isoobs daemon at 127.0.0.1:1") {
		t.Errorf("want a 'cannot reach' error, got %v", err)
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("the gRPC code must survive the wrapping, got %v", status.Code(err))
	}
}

func TestStreamEmitErrorStops(t *testing.T) {
	client := fakedaemon.StartBufconn(t, &fakedaemon.Server{Node: "n", Frame: countingFrames("p", 1, 100)})
	boom := errors.New("stdout closed")
	err := top.Stream(context.Background(), []top.Source{{Name: "n", Client: client}},
		top.StreamOptions{Request: request(10 * time.Millisecond)}, func(top.Frame) error { return boom })
	if !errors.Is(err, boom) {
		t.Errorf("want the emit error, got %v", err)
	}
}

func TestDaemonTarget(t *testing.T) {
	tests := []struct {
		addr, want, errPart string
	}{
		{"127.0.0.1:7070", "passthrough:///127.0.0.1:7070", ""},
		{":7070", "passthrough:///127.0.0.1:7070", ""},
		{"[::1]:7070", "passthrough:///[::1]:7070", ""},
		{"unix:///run/isoobs/isoobs.sock", "unix:///run/isoobs/isoobs.sock", ""},
		{"localhost", "", "expected host:port"},
		{"http://x:1", "", "only unix:// sockets"},
		{"unix://", "", "no socket path"},
		{"", "", "empty --daemon"},
	}
	for _, tt := range tests {
		got, err := top.DaemonTarget(tt.addr)
		if tt.errPart != "" {
			if err == nil || !strings.Contains(err.Error(), tt.errPart) {
				t.Errorf("%q: want error with %q, got %q, %v", tt.addr, tt.errPart, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q: got %q, %v; want %q", tt.addr, got, err, tt.want)
		}
	}
}

func TestStreamMarksMissingNodes(t *testing.T) {
	a := &fakedaemon.Server{Node: "node-a", Frame: countingFrames("crawler-1", 100, 1), Ticks: make(chan struct{})}
	unreachable, err := top.DialDaemon("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer unreachable.Close()
	frames := make(chan top.Frame, 4)
	done := make(chan error, 1)
	go func() {
		done <- top.Stream(context.Background(), []top.Source{
			{Name: "node-a", Client: fakedaemon.StartBufconn(t, a)},
			{Name: "node-b", Client: isoobsv1.NewDaemonClient(unreachable)},
		}, top.StreamOptions{Request: request(time.Hour), Merge: top.MergeOptions{GroupBy: top.GroupByWorkload}, MaxWait: time.Hour,
			Missing: []top.MissingNode{{Node: "node-c", Reason: "no isoobs daemon pod on this node"}}},
			func(f top.Frame) error { frames <- f; return nil })
	}()
	// node-b cannot even open its stream; node-a's frame must still come out
	// at once (not after MaxWait), with both other nodes marked.
	a.Ticks <- struct{}{}
	f := next(t, frames)
	if len(f.Rows) != 1 || f.Rows[0].Queries != 100 || len(f.Nodes) != 1 || f.Nodes[0] != "node-a" {
		t.Fatalf("frame rows %+v nodes %v", f.Rows, f.Nodes)
	}
	if len(f.MissingNodes) != 2 || f.MissingNodes[0].Node != "node-c" || f.MissingNodes[1].Node != "node-b" ||
		!strings.Contains(f.MissingNodes[1].Reason, "cannot reach") {
		t.Errorf("missing nodes: %+v", f.MissingNodes)
	}
	if len(f.Warnings) != 2 {
		t.Errorf("warnings: %v", f.Warnings)
	}
	a.Ticks <- struct{}{}
	if err := next(t, done); err == nil || !strings.Contains(err.Error(), "node-b") {
		t.Errorf("Stream must end with node-b's error, got %v", err)
	}
}
