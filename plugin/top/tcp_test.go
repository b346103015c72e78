package top

import (
	"testing"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

func tcpTestFrame(node string, rows ...*isoobsv1.TCPRow) *isoobsv1.TopFrame {
	total := &isoobsv1.TCPRow{Node: node}
	for _, r := range rows {
		r.Node = node
		total.ActiveOpens += r.ActiveOpens
		total.RetransSegs += r.RetransSegs
		total.Pods += r.Pods
	}
	return &isoobsv1.TopFrame{Node: node, TcpRows: rows, TcpTotal: total}
}

func rtt(bucket int, n uint64) []uint64 {
	h := make([]uint64, 32)
	h[bucket] = n
	return h
}

func TestMergeTCPAcrossNodes(t *testing.T) {
	a := tcpTestFrame("node-a",
		&isoobsv1.TCPRow{Namespace: "shop", Pod: "api-1", PodUid: "u1", Workload: "api", WorkloadKind: "Deployment", Pods: 1,
			ActiveOpens: 10, ConnectRefused: 4, ConnectFailuresPerSecond: 4, RetransSegs: 1, SegsOut: 99, RttLog2Us: rtt(10, 99)},
		&isoobsv1.TCPRow{Namespace: "shop", Pod: "db-0", PodUid: "u2", Workload: "db", WorkloadKind: "StatefulSet", Pods: 1,
			PassiveOpens: 30, RetransSegs: 50, RetransPerSecond: 50, SegsOut: 950, RttLog2Us: rtt(3, 10)})
	b := tcpTestFrame("node-b",
		&isoobsv1.TCPRow{Namespace: "shop", Pod: "api-2", PodUid: "u3", Workload: "api", WorkloadKind: "Deployment", Pods: 1,
			ActiveOpens: 5, ResetsReceived: 7, ResetsPerSecond: 7, RttLog2Us: rtt(20, 1)})

	byPod := MergeTCP([]*isoobsv1.TopFrame{a, b}, GroupByPod)
	if len(byPod.Rows) != 3 || byPod.Total.ActiveOpens != 15 || byPod.Total.Pods != 3 || len(byPod.Nodes) != 2 {
		t.Fatalf("by pod: %d rows, total opens %d pods %d, nodes %v", len(byPod.Rows), byPod.Total.ActiveOpens, byPod.Total.Pods, byPod.Nodes)
	}
	sorted := byPod.SortedLimited(TCPSortErrors, 2)
	if sorted.Rows[0].Pod != "api-2" || sorted.Rows[1].Pod != "api-1" || sorted.Truncated != 1 {
		t.Errorf("sort by errors (failures+resets per second): %s, %s (truncated %d); want api-2 (7/s), api-1 (4/s), 1 cut",
			sorted.Rows[0].Pod, sorted.Rows[1].Pod, sorted.Truncated)
	}
	if r := byPod.SortedLimited(TCPSortRetrans, 0).Rows[0]; r.Pod != "db-0" || r.RetransPercent() != 5 {
		t.Errorf("sort by retrans: %s with %.2f%% retransmitted, want db-0 with 5%%", r.Pod, r.RetransPercent())
	}

	byWorkload := MergeTCP([]*isoobsv1.TopFrame{
		tcpTestFrame("node-a", &isoobsv1.TCPRow{Namespace: "shop", Workload: "api", WorkloadKind: "Deployment", Pods: 1, ActiveOpens: 10, RttLog2Us: rtt(10, 99)}),
		tcpTestFrame("node-b", &isoobsv1.TCPRow{Namespace: "shop", Workload: "api", WorkloadKind: "Deployment", Pods: 1, ActiveOpens: 5, RttLog2Us: rtt(20, 1)}),
	}, GroupByWorkload)
	if len(byWorkload.Rows) != 1 {
		t.Fatalf("by workload: %v", byWorkload.Rows)
	}
	w := byWorkload.Rows[0]
	if w.ActiveOpens != 15 || w.Pods != 2 || w.Node != "" || w.Workload != "api" {
		t.Errorf("merged workload row: %+v", w)
	}
	// The histograms add: 99 samples in [1.024, 2.048) ms and 1 near 1 s, so p50 stays in the
	// first bucket and p99 too (the 99th of 100 samples), p100 would be the slow one.
	if w.RTTP50Ms < 1.024 || w.RTTP50Ms >= 2.048 || w.RTTP99Ms > 2.048 {
		t.Errorf("merged RTT p50 %.3f p99 %.3f ms", w.RTTP50Ms, w.RTTP99Ms)
	}
}

func TestParseTCPFlags(t *testing.T) {
	if _, err := ParseTCPSort("qps"); err == nil {
		t.Error("qps accepted as a TCP sort key")
	}
	if k, err := ParseTCPSort(" Retrans "); err != nil || k != TCPSortRetrans {
		t.Errorf("ParseTCPSort: %q %v", k, err)
	}
	if _, _, err := ParseTCPGroupBy("qname"); err == nil {
		t.Error("qname accepted as a TCP grouping")
	}
	if k, g, err := ParseTCPGroupBy("workload"); err != nil || k != GroupByWorkload || g != isoobsv1.GroupBy_GROUP_BY_WORKLOAD {
		t.Errorf("ParseTCPGroupBy: %q %v %v", k, g, err)
	}
}

func TestMergeDropsAcrossNodes(t *testing.T) {
	frame := func(node string, rows ...*isoobsv1.DropRow) *isoobsv1.TopFrame {
		total := &isoobsv1.DropRow{Node: node}
		for _, r := range rows {
			r.Node = node
			total.Packets += r.Packets
		}
		return &isoobsv1.TopFrame{Node: node, DropRows: rows, DropTotal: total,
			DropNoSocket: &isoobsv1.DropRow{Node: node, Packets: 2, Reasons: []*isoobsv1.DropReasonCount{{Reason: "NO_SOCKET", Packets: 2}}},
			DropLocations: []*isoobsv1.DropLocationCount{{Location: "nf_hook_slow", Reason: "NETFILTER_DROP", Packets: total.Packets},
				{Location: "tcp_v4_rcv", Reason: "NO_SOCKET", Packets: 2}}}
	}
	merged := MergeDrops([]*isoobsv1.TopFrame{
		frame("node-a", &isoobsv1.DropRow{Namespace: "shop", Workload: "api", Pods: 1, Packets: 10, PacketsPerSecond: 10,
			Reasons: []*isoobsv1.DropReasonCount{{Reason: "NETFILTER_DROP", Packets: 10}}}),
		frame("node-b", &isoobsv1.DropRow{Namespace: "shop", Workload: "api", Pods: 1, Packets: 5, PacketsPerSecond: 5,
			Reasons: []*isoobsv1.DropReasonCount{{Reason: "SOCKET_RCVBUFF", Packets: 3}, {Reason: "NETFILTER_DROP", Packets: 2}}}),
	}, GroupByWorkload)
	if len(merged.Rows) != 1 {
		t.Fatalf("rows %v", merged.Rows)
	}
	r := merged.Rows[0]
	if r.Packets != 15 || r.Pods != 2 || r.PacketsPerSecond != 15 || len(r.Reasons) != 2 || r.Reasons[0] != (DropReason{Reason: "NETFILTER_DROP", Packets: 12}) {
		t.Errorf("merged row %+v", r)
	}
	if merged.Total.Packets != 15 || merged.NoSocket.Packets != 4 || merged.NoSocket.Reasons[0].Packets != 4 {
		t.Errorf("total %+v no socket %+v", merged.Total, merged.NoSocket)
	}
	hub := MergeDrops([]*isoobsv1.TopFrame{
		frame("node-a", &isoobsv1.DropRow{Namespace: "shop", Workload: "api", Pods: 1, Packets: 10, Sources: []string{"ebpf", "hubble"},
			Reasons: []*isoobsv1.DropReasonCount{{Reason: "NETFILTER_DROP", Packets: 10}}, HubbleReasons: []*isoobsv1.DropReasonCount{{Reason: "POLICY_DENIED", Packets: 4}}}),
		frame("node-b", &isoobsv1.DropRow{Namespace: "shop", Workload: "api", Pods: 1, Packets: 3, Sources: []string{"hubble"},
			HubbleReasons: []*isoobsv1.DropReasonCount{{Reason: "POLICY_DENIED", Packets: 3}}}),
	}, GroupByWorkload).Rows
	if len(hub) != 1 || hub[0].Packets != 13 || len(hub[0].Sources) != 2 || hub[0].Sources[0] != "ebpf" || hub[0].Sources[1] != "hubble" ||
		len(hub[0].HubbleReasons) != 1 || hub[0].HubbleReasons[0] != (DropReason{Reason: "POLICY_DENIED", Packets: 7}) {
		t.Errorf("merged with Hubble: %+v, want 13 packets, sources ebpf+hubble, POLICY_DENIED:7", hub)
	}
	if l := merged.Locations; len(l) != 2 || l[0] != (DropLocation{Location: "nf_hook_slow", Reason: "NETFILTER_DROP", Packets: 15}) ||
		l[1] != (DropLocation{Location: "tcp_v4_rcv", Reason: "NO_SOCKET", Packets: 4}) {
		t.Errorf("locations %+v, want nf_hook_slow NETFILTER_DROP 15 and tcp_v4_rcv NO_SOCKET 4", l)
	}
}
