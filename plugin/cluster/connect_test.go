package cluster_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/isoobs/isoobs/plugin/cluster"
	"github.com/isoobs/isoobs/plugin/internal/fakedaemon"
	"github.com/isoobs/isoobs/plugin/top"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// nodeFrames: each node's daemon reports one crawler pod with queries = 1000*(node index+1).
func nodeFrames(node string, queries uint64) fakedaemon.FrameFunc {
	return func(req *isoobsv1.TopRequest, n int, start, now time.Time) *isoobsv1.TopFrame {
		f := &isoobsv1.TopFrame{Node: node, Rows: []*isoobsv1.DNSRow{{
			Node: node, Namespace: "tenant-jobs", Pod: "crawler-" + node, Workload: "crawler", WorkloadKind: "Deployment",
			Queries: queries, Responses: queries, Nxdomain: queries,
			TopNames: []*isoobsv1.NameCount{{Name: "x.crawl.example", Queries: queries}},
		}}, TopNames: []*isoobsv1.NameCount{{Name: "x.crawl.example", Queries: queries}}}
		return fakedaemon.Stamp(f, req, start, now)
	}
}

func unixDialer(addrs map[string]string) cluster.DialFunc {
	return func(ctx context.Context, pod cluster.DaemonPod) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", strings.TrimPrefix(addrs[pod.Node], "unix://"))
	}
}

func TestConnectMarksUnreachableNodesAndMergesTheRest(t *testing.T) {
	addrs := map[string]string{}
	var pods []cluster.DaemonPod
	for i, node := range []string{"node-a", "node-b", "node-c"} {
		addrs[node] = fakedaemon.StartUnix(t, &fakedaemon.Server{Node: node, Frame: nodeFrames(node, uint64(1000*(i+1))), Immediate: true})
		pods = append(pods, cluster.DaemonPod{Node: node, Namespace: "isoobs", Name: "isoobs-" + node, Port: 9967})
	}
	// node-d: nothing listens; node-e: accepts and never speaks gRPC (a hung forward).
	addrs["node-d"] = "unix://" + filepath.Join(t.TempDir(), "nobody.sock")
	hung := filepath.Join(t.TempDir(), "hung.sock")
	ln, err := net.Listen("unix", hung)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	addrs["node-e"] = "unix://" + hung
	pods = append(pods, cluster.DaemonPod{Node: "node-d", Namespace: "isoobs", Name: "isoobs-node-d", Port: 9967},
		cluster.DaemonPod{Node: "node-e", Namespace: "isoobs", Name: "isoobs-node-e", Port: 9967})

	start := time.Now()
	conns, missing, err := cluster.Connect(context.Background(), pods, unixDialer(addrs), cluster.Options{ConnectTimeout: time.Second, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer conns.Close()
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Connect took %s; a hung node must cost at most its timeout", took)
	}
	if len(conns) != 3 || len(missing) != 2 || missing[0].Node != "node-d" || missing[1].Node != "node-e" {
		t.Fatalf("conns %d, missing %+v", len(conns), missing)
	}
	if !strings.Contains(missing[0].Reason, "no such file") || !strings.Contains(missing[1].Reason, "within 1s") {
		t.Errorf("reasons: %+v", missing)
	}

	var got top.Frame
	err = top.Stream(context.Background(), conns.Sources(), top.StreamOptions{
		Request: &isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DNS, GroupBy: isoobsv1.GroupBy_GROUP_BY_WORKLOAD, Interval: durationpb.New(time.Hour)},
		Merge:   top.MergeOptions{GroupBy: top.GroupByWorkload}, Missing: missing,
	}, func(f top.Frame) error { got = f; return top.ErrStop })
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Rows) != 1 || got.Rows[0].Queries != 6000 || got.Rows[0].Pods != 3 || len(got.Nodes) != 3 || len(got.MissingNodes) != 2 {
		t.Errorf("merged frame: rows %+v nodes %v missing %v", got.Rows, got.Nodes, got.MissingNodes)
	}
	if len(got.TopNames) != 1 || got.TopNames[0].Queries != 6000 {
		t.Errorf("top names: %+v", got.TopNames)
	}
}

func TestConnectReturnsThePermissionError(t *testing.T) {
	denied := &cluster.PermissionError{Verb: "create", Resource: "pods/portforward", Namespace: "isoobs", Why: "to reach the isoobs daemon pods"}
	dial := func(context.Context, cluster.DaemonPod) (net.Conn, error) { return nil, denied }
	pods := []cluster.DaemonPod{{Node: "a", Namespace: "isoobs", Name: "p-a"}, {Node: "b", Namespace: "isoobs", Name: "p-b"}}
	_, missing, err := cluster.Connect(context.Background(), pods, dial, cluster.Options{})
	var pe *cluster.PermissionError
	if !errors.As(err, &pe) || len(missing) != 2 {
		t.Fatalf("want the permission error, got %v (missing %v)", err, missing)
	}
	for _, want := range []string{"not allowed to create pods/portforward in namespace isoobs", `resources: ["pods/portforward"]`, "kubectl auth can-i create pods/portforward -n isoobs"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
