package top

import (
	"net/netip"
	"testing"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// A workload with a pod on each of two nodes: their peers add by address, rank by the sort key
// and carry their share of the merged row's count, and names come from the cluster's table.
func TestMergeTCPPeers(t *testing.T) {
	svc := &isoobsv1.TCPPeer{Ip: "10.96.0.50", Port: 8080, Opens: 40, ResetsReceived: 40}
	a := tcpTestFrame("node-a", &isoobsv1.TCPRow{Namespace: "tenant-jobs", Workload: "crawler", WorkloadKind: "Deployment", Pods: 1,
		ActiveOpens: 70, ConnectRefused: 20, ResetsReceived: 40, PeerUnattributed: 1,
		TopPeers: []*isoobsv1.TCPPeer{svc, {Ip: "10.0.1.8", Port: 80, ConnectRefused: 20}, {Ip: "10.0.1.7", Port: 443, Opens: 30}}})
	b := tcpTestFrame("node-b", &isoobsv1.TCPRow{Namespace: "tenant-jobs", Workload: "crawler", WorkloadKind: "Deployment", Pods: 1,
		ActiveOpens: 10, ResetsReceived: 10, OtherPeers: 2,
		TopPeers: []*isoobsv1.TCPPeer{{Ip: "10.96.0.50", Port: 8080, Opens: 10, ResetsReceived: 10}}})
	f := MergeTCP([]*isoobsv1.TopFrame{a, b}, GroupByWorkload).SortedLimited(TCPSortErrors, 0)
	if len(f.Rows) != 1 {
		t.Fatalf("rows %v", f.Rows)
	}
	r := f.Rows[0]
	// errors: 20 refused + 50 resets = 70; the Service has 50 of them, the closed port 20.
	if len(r.TopPeers) != 3 || r.OtherPeers != 2 || r.PeerUnattributed != 1 {
		t.Fatalf("merged peers %+v (others %d, unattributed %d)", r.TopPeers, r.OtherPeers, r.PeerUnattributed)
	}
	want := []struct {
		addr  string
		share float64
	}{{"10.96.0.50:8080", 100 * 50.0 / 70}, {"10.0.1.8:80", 100 * 20.0 / 70}, {"10.0.1.7:443", 0}}
	for i, w := range want {
		if p := r.TopPeers[i]; p.Address() != w.addr || p.Share != w.share {
			t.Errorf("peer %d: %s %.4f%%, want %s %.4f%%", i, p.Address(), p.Share, w.addr, w.share)
		}
	}
	if p := r.TopPeers[0]; p.Opens != 50 || p.ResetsReceived != 50 {
		t.Errorf("the Service across nodes: %+v, want 50 opens and 50 resets", p)
	}
	// By opens: attempts 100 (80 opens + 20 refused); the Service 50 = 50%, the API pod 30%.
	byOpens := MergeTCP([]*isoobsv1.TopFrame{a, b}, GroupByWorkload).SortedLimited(TCPSortOpens, 0).Rows[0]
	if byOpens.TopPeers[0].Share != 50 || byOpens.TopPeers[1].Address() != "10.0.1.7:443" || byOpens.TopPeers[1].Share != 30 {
		t.Errorf("by opens: %+v", byOpens.TopPeers)
	}
	named := f.Named(func(ip netip.Addr) (PeerName, bool) {
		if ip == netip.MustParseAddr("10.96.0.50") {
			return PeerName{Kind: "service", Namespace: "tenant-jobs", Name: "resetter"}, true
		}
		return PeerName{}, false
	})
	if got := named.Rows[0].TopPeers[0].DisplayName(); got != "service/tenant-jobs/resetter:8080" {
		t.Errorf("named peer %q", got)
	}
	if got := named.Rows[0].TopPeers[1].DisplayName(); got != "10.0.1.8:80" {
		t.Errorf("unnamed peer %q", got)
	}
	if f.Rows[0].TopPeers[0].Name != "" {
		t.Error("Named changed the frame it was called on")
	}
}

func TestMergeTCPGroupByPeer(t *testing.T) {
	peerRow := func(p *isoobsv1.TCPPeer) *isoobsv1.TCPRow {
		p.Pods = 1
		return &isoobsv1.TCPRow{Pods: 1, Peer: p, ActiveOpens: p.Opens, ResetsReceived: p.ResetsReceived}
	}
	f := MergeTCP([]*isoobsv1.TopFrame{
		tcpTestFrame("node-a", peerRow(&isoobsv1.TCPPeer{Ip: "10.96.0.50", Port: 8080, Opens: 40, ResetsReceived: 40}),
			peerRow(&isoobsv1.TCPPeer{Ip: "10.0.1.5", Inbound: true, Opens: 3})),
		tcpTestFrame("node-b", peerRow(&isoobsv1.TCPPeer{Ip: "10.96.0.50", Port: 8080, Opens: 10, ResetsReceived: 10})),
	}, GroupByPeer).SortedLimited(TCPSortErrors, 0)
	if len(f.Rows) != 2 {
		t.Fatalf("rows %v", f.Rows)
	}
	r := f.Rows[0]
	if r.Peer == nil || r.Peer.Address() != "10.96.0.50:8080" || r.Peer.Opens != 50 || r.Peer.ResetsReceived != 50 || r.Pods != 2 || r.Peer.Pods != 2 {
		t.Errorf("the Service's row: %+v peer %+v", r, r.Peer)
	}
	if got := f.Rows[1].DisplayName(GroupByPeer); got != "<-10.0.1.5" {
		t.Errorf("inbound peer shown as %q", got)
	}
}
