package top

import (
	"fmt"
	"testing"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// clusterFrames is one frame per node, podsPerNode pod rows each, spread
// over 50 workloads, with a full histogram and 5 top names per row.
func clusterFrames(nodes, podsPerNode int) []*isoobsv1.TopFrame {
	frames := make([]*isoobsv1.TopFrame, nodes)
	for n := range nodes {
		f := &isoobsv1.TopFrame{Node: fmt.Sprintf("node-%d", n)}
		for p := range podsPerNode {
			h := make([]uint64, 24)
			h[8+p%8] = uint64(100 + p)
			row := &isoobsv1.DNSRow{
				Namespace: fmt.Sprintf("ns-%d", p%10), Pod: fmt.Sprintf("pod-%d-%d", n, p), PodUid: fmt.Sprintf("uid-%d-%d", n, p),
				Workload: fmt.Sprintf("wl-%d", p%50), WorkloadKind: "Deployment",
				Queries: uint64(1000 + p), Qps: float64(p), Responses: uint64(1000 + p), Nxdomain: uint64(p), LatencyLog2Us: h,
			}
			for k := range 5 {
				row.TopNames = append(row.TopNames, &isoobsv1.NameCount{Name: fmt.Sprintf("name-%d.example.com", (p+k)%200), Queries: uint64(10 * k)})
			}
			f.Rows = append(f.Rows, row)
		}
		frames[n] = f
	}
	return frames
}

// BenchmarkMerge measures one merged frame of a 20-node cluster with 100
// pods per node (2000 rows), by pod and by workload.
func BenchmarkMerge(b *testing.B) {
	frames := clusterFrames(20, 100)
	for _, groupBy := range []string{GroupByPod, GroupByWorkload} {
		b.Run(groupBy, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f := Merge(frames, MergeOptions{GroupBy: groupBy, TopNames: 3})
				_ = f.SortedLimited(SortQPS, 20)
			}
		})
	}
}
