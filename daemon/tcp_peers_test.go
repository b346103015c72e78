package daemon

import (
	"net/netip"
	"testing"
	"time"

	"github.com/isoobs/isoobs/bpf"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

var (
	resetterSvc = netip.MustParseAddr("10.96.0.50") // a Service IP (kube-proxy translates after the socket)
	apiPod      = netip.MustParseAddr("10.0.1.7")
	closedPod   = netip.MustParseAddr("10.0.1.8")
	clientPod   = netip.MustParseAddr("10.0.1.5")
)

func peerString(p *isoobsv1.TCPPeer) string {
	if p.Inbound {
		return "from " + p.Ip
	}
	return netip.AddrPortFrom(netip.MustParseAddr(p.Ip), uint16(p.Port)).String()
}

// The crawler's two containers talk to a resetting Service, an API pod and a closed port; the
// host talks to the API pod too; coreapi accepts connections. Each pod's top peers, their order
// under a sort key, the group-by-peer rows and the since-stream-start counts are exactly those.
func TestTCPPeersPerPodAndGroupByPeer(t *testing.T) {
	f := newTCPFixture(t)
	f.step()
	f.tsrc.addPeer(bpf.PeerKey{CgroupID: 101, Addr: resetterSvc, Port: 8080}, func(c *bpf.PeerCounters) { c.Opens += 40; c.ResetsReceived += 40 })
	f.tsrc.addPeer(bpf.PeerKey{CgroupID: 102, Addr: resetterSvc, Port: 8080}, func(c *bpf.PeerCounters) { c.Opens += 10; c.ResetsReceived += 10 })
	f.tsrc.addPeer(bpf.PeerKey{CgroupID: 101, Addr: apiPod, Port: 443}, func(c *bpf.PeerCounters) { c.Opens += 30; c.RetransSegs += 2 })
	f.tsrc.addPeer(bpf.PeerKey{CgroupID: 101, Addr: closedPod, Port: 80}, func(c *bpf.PeerCounters) { c.Refused += 20 })
	f.tsrc.addPeer(bpf.PeerKey{CgroupID: 900, Addr: apiPod, Port: 443}, func(c *bpf.PeerCounters) { c.Opens += 1000 }) // the host
	f.tsrc.addPeer(bpf.PeerKey{CgroupID: 301, Addr: clientPod, Inbound: true}, func(c *bpf.PeerCounters) { c.Opens += 25; c.ResetsSent += 3 })
	f.tsrc.add(101, func(c *bpf.TCPCounters) { c.ActiveOpens += 80; c.PeerUnattributed += 4 })
	f.step()

	fr := f.frame(t, &isoobsv1.TopRequest{})
	cr := tcpRowByPod(fr, "crawler-7d9f-a")
	if cr == nil {
		t.Fatalf("no crawler row: %v", fr.TcpRows)
	}
	// Default sort (errors): failures + resets per peer.
	want := []struct {
		peer                              string
		opens, refused, rstIn, retransmit uint64
	}{{"10.96.0.50:8080", 50, 0, 50, 0}, {"10.0.1.8:80", 0, 20, 0, 0}, {"10.0.1.7:443", 30, 0, 0, 2}}
	if len(cr.TopPeers) != len(want) || cr.OtherPeers != 0 || cr.PeerUnattributed != 4 {
		t.Fatalf("crawler peers %v (%d others, %d unattributed), want %d peers, 0 others, 4 unattributed", cr.TopPeers, cr.OtherPeers, cr.PeerUnattributed, len(want))
	}
	for i, w := range want {
		p := cr.TopPeers[i]
		if peerString(p) != w.peer || p.Opens != w.opens || p.ConnectRefused != w.refused || p.ResetsReceived != w.rstIn || p.RetransSegs != w.retransmit {
			t.Errorf("crawler peer %d: %s %+v, want %+v", i, peerString(p), p, w)
		}
	}
	api := tcpRowByPod(fr, "coreapi-0")
	if api == nil || len(api.TopPeers) != 1 || peerString(api.TopPeers[0]) != "from 10.0.1.5" || api.TopPeers[0].Opens != 25 || api.TopPeers[0].ResetsSent != 3 {
		t.Errorf("coreapi peers: %v, want from 10.0.1.5 with 25 opens and 3 resets sent", api)
	}
	// Sort by opens: connect attempts rank the peers.
	fr = f.frame(t, &isoobsv1.TopRequest{Sort: TCPSortOpens})
	cr = tcpRowByPod(fr, "crawler-7d9f-a")
	var order []string
	for _, p := range cr.TopPeers {
		order = append(order, peerString(p))
	}
	if len(order) != 3 || order[0] != "10.96.0.50:8080" || order[1] != "10.0.1.7:443" || order[2] != "10.0.1.8:80" {
		t.Errorf("peers by connect attempts: %v, want 10.96.0.50:8080 (50), 10.0.1.7:443 (30), 10.0.1.8:80 (20)", order)
	}

	// Group by peer: one row per peer; the host's 1000 opens to the API pod are no pod's.
	fr = f.frame(t, &isoobsv1.TopRequest{GroupBy: isoobsv1.GroupBy_GROUP_BY_PEER})
	if len(fr.TcpRows) != 4 {
		t.Fatalf("peer rows: %v, want 4", fr.TcpRows)
	}
	byPeer := map[string]*isoobsv1.TCPRow{}
	for _, r := range fr.TcpRows {
		byPeer[peerString(r.Peer)] = r
	}
	if r := byPeer["10.96.0.50:8080"]; r == nil || r.ActiveOpens != 50 || r.ResetsReceived != 50 || r.Pods != 1 || r.Peer.Pods != 1 || fr.TcpRows[0] != r {
		t.Errorf("resetting service row: %v; want 50 opens, 50 resets from 1 pod, ranked first", r)
	}
	if r := byPeer["10.0.1.7:443"]; r == nil || r.ActiveOpens != 30 || r.RetransSegs != 2 {
		t.Errorf("API pod row: %v; want 30 opens and 2 retransmits (the host's 1000 left out)", r)
	}
	if r := byPeer["from 10.0.1.5"]; r == nil || r.PassiveOpens != 25 || r.ActiveOpens != 0 || r.ResetsSent != 3 {
		t.Errorf("inbound client row: %v; want 25 passive opens and 3 resets sent", r)
	}
	if _, err := newTCPQuery(&isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DROPS, GroupBy: isoobsv1.GroupBy_GROUP_BY_PEER}, time.Second); err == nil {
		t.Error("drops grouped by peer were accepted")
	}

	// Since stream start: only what happened after.
	q, err := newTCPQuery(&isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_TCP, SinceStreamStart: true}, f.cfg.Interval)
	if err != nil {
		t.Fatal(err)
	}
	f.tc.startStream(q)
	f.tsrc.addPeer(bpf.PeerKey{CgroupID: 102, Addr: resetterSvc, Port: 8080}, func(c *bpf.PeerCounters) { c.Opens += 5; c.ResetsReceived += 5 })
	f.step()
	fr = f.tc.frame(q)
	cr = tcpRowByPod(fr, "crawler-7d9f-a")
	if cr == nil || len(cr.TopPeers) != 1 || peerString(cr.TopPeers[0]) != "10.96.0.50:8080" || cr.TopPeers[0].Opens != 5 || cr.TopPeers[0].ResetsReceived != 5 {
		t.Errorf("since stream start: %v, want the 5 new connections to 10.96.0.50:8080 only", cr)
	}
}

// More peers than a pod keeps: their events are counted as unattributed. Kernel entries idle
// for the retention are deleted (the table keeps room) while the pod keeps its totals.
func TestTCPPeersBoundedAndIdleForgotten(t *testing.T) {
	f := newTCPFixture(t)
	f.step()
	const n = maxPeersPerPod + 44
	// The first maxPeersPerPod peers in one tick, the rest in the next: those are past the bound.
	for i := range n {
		if i == maxPeersPerPod {
			f.step()
		}
		a := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		f.tsrc.addPeer(bpf.PeerKey{CgroupID: 301, Addr: a, Port: 80}, func(c *bpf.PeerCounters) { c.Opens++ })
	}
	f.step()
	fr := f.frame(t, &isoobsv1.TopRequest{})
	api := tcpRowByPod(fr, "coreapi-0")
	if api == nil || len(api.TopPeers) != topPeersPerRow || api.OtherPeers != maxPeersPerPod-topPeersPerRow || api.PeerUnattributed != 44 {
		t.Fatalf("coreapi: %v; want %d top peers, %d others, 44 unattributed", api, topPeersPerRow, maxPeersPerPod-topPeersPerRow)
	}
	for range int(f.cfg.Retention/time.Second) + f.cfg.gcEvery() {
		f.step()
	}
	if len(f.tsrc.peersDeleted) != n || len(f.tsrc.peers) != 0 || f.tc.peersForgotten != n {
		t.Fatalf("idle kernel entries deleted: %d (forgotten %d), left %d; want all %d", len(f.tsrc.peersDeleted), f.tc.peersForgotten, len(f.tsrc.peers), n)
	}
	// A forgotten entry that comes back counts from zero, on top of what the pod had.
	f.tsrc.addPeer(bpf.PeerKey{CgroupID: 301, Addr: netip.AddrFrom4([4]byte{10, 1, 0, 0}), Port: 80}, func(c *bpf.PeerCounters) { c.Opens += 7 })
	f.step()
	fr = f.frame(t, &isoobsv1.TopRequest{Sort: TCPSortOpens})
	api = tcpRowByPod(fr, "coreapi-0")
	if api == nil || peerString(api.TopPeers[0]) != "10.1.0.0:80" || api.TopPeers[0].Opens != 8 {
		t.Errorf("coreapi's first peer after the entry came back: %v, want 10.1.0.0:80 with 1+7 opens", api.GetTopPeers())
	}
}
