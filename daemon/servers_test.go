package daemon

import (
	"net/netip"
	"testing"
	"time"

	"github.com/isoobs/isoobs/bpf"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// toServer records n queries of cgroup id to server, answered (nx of them NXDOMAIN), each
// timed at lat. The kernel's server list is cumulative and a new slice on every read.
func (f *fakeSource) toServer(id uint64, server string, n, nx uint64, lat time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.pods[id]
	p.Queries += n
	p.Responses += n
	p.Rcode[bpf.RcodeNXDomain] += nx
	p.Rcode[bpf.RcodeNoError] += n - nx
	addr := netip.AddrPortFrom(netip.MustParseAddr(server), 53)
	servers := append([]bpf.ServerCounters(nil), p.Servers...)
	i := 0
	for i < len(servers) && servers[i].Server != addr {
		i++
	}
	if i == len(servers) {
		servers = append(servers, bpf.ServerCounters{Server: addr})
	}
	s := &servers[i]
	s.Queries += n
	s.Answers += n
	s.NXDomain += nx
	s.Timed += n
	s.LatencySumUS += n * uint64(lat.Microseconds())
	p.Servers = servers
	f.pods[id] = p
}

// serve records n queries served by cgroup id, sf of them answered SERVFAIL.
func (f *fakeSource) serve(id uint64, n, sf uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.pods[id]
	p.ServerQueries += n
	p.ServerResponses += n
	p.ServedRcode[bpf.RcodeServFail] += sf
	p.ServedRcode[bpf.RcodeNoError] += n - sf
	p.ServedLatencyLog2US[10] += n
	f.pods[id] = p
}

func serverOf(r *isoobsv1.DNSRow, addr string) *isoobsv1.DNSServer {
	for _, s := range r.GetServers() {
		if s.Address == addr {
			return s
		}
	}
	return nil
}

// Per-server counts add up across ticks and containers, are cut to the stream's start like
// every counter, and a group sums its pods' servers; a DNS server pod's row carries its IPs
// and what it served.
func TestServersPerPodAndScope(t *testing.T) {
	f := newFixture(t, nil)
	meta := f.meta[uidAPI]
	meta.IPs = []string{"10.0.0.5"}
	f.meta[uidAPI] = meta
	f.c.tick(f.now)
	for range 5 {
		f.src.toServer(101, "10.0.0.5", 4, 1, time.Millisecond)
		f.src.toServer(102, "10.96.0.10", 2, 0, 3*time.Millisecond) // the same pod's other container
		f.src.toServer(201, "10.0.0.5", 1, 0, time.Millisecond)
		f.src.serve(301, 5, 1)
		f.step()
	}
	q, err := newTopQuery(&isoobsv1.TopRequest{SinceStreamStart: true}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f.c.startStream(q)
	defer f.c.removeSink(q.sink)
	f.src.toServer(101, "10.0.0.5", 3, 0, time.Millisecond)
	f.step()

	all := f.frame(t, &isoobsv1.TopRequest{})
	cr := rowByPod(all, "crawler-7d9f-a")
	a, svc := serverOf(cr, "10.0.0.5"), serverOf(cr, "10.96.0.10")
	if len(cr.Servers) != 2 || a == nil || svc == nil || a != cr.Servers[0] {
		t.Fatalf("crawler's servers %v: want 10.0.0.5 then 10.96.0.10", cr.Servers)
	}
	if a.Queries != 23 || a.Answers != 23 || a.Nxdomain != 5 || a.Timed != 23 || a.LatencySumUs != 23_000 {
		t.Errorf("crawler to 10.0.0.5: %+v", a)
	}
	if svc.Queries != 10 || svc.LatencySumUs != 30_000 {
		t.Errorf("crawler to 10.96.0.10: %+v", svc)
	}
	api := rowByPod(all, "coreapi-0")
	if api.ServedQueries != 25 || api.ServedServfail != 5 || len(api.PodIps) != 1 || api.PodIps[0] != "10.0.0.5" || api.ServedLatencyLog2Us[10] != 25 {
		t.Errorf("server pod's row: served %d, SERVFAIL %d, IPs %v, latency %v", api.ServedQueries, api.ServedServfail, api.PodIps, api.ServedLatencyLog2Us)
	}
	if len(cr.PodIps) != 0 {
		t.Errorf("a client pod's row carries IPs %v: only DNS server pods' are sent", cr.PodIps)
	}

	if s := serverOf(rowByPod(f.c.frame(q), "crawler-7d9f-a"), "10.0.0.5"); s == nil || s.Queries != 3 || s.Nxdomain != 0 {
		t.Errorf("since the stream started, crawler to 10.0.0.5: %+v, want 3 queries", s)
	}
	wl := f.frame(t, &isoobsv1.TopRequest{GroupBy: isoobsv1.GroupBy_GROUP_BY_WORKLOAD})
	for _, r := range wl.Rows {
		if r.Workload == "crawler" {
			if s := serverOf(r, "10.0.0.5"); s == nil || s.Queries != 28 {
				t.Errorf("crawler workload to 10.0.0.5: %+v, want 23 + 5", s)
			}
		}
	}
}

// Past the bound a pod's extra servers are summed as "other", and so are a row's servers past
// maxRowServers.
func TestServersBounded(t *testing.T) {
	f := newFixture(t, nil)
	f.c.tick(f.now)
	for i := range maxSubjectServers + 4 {
		f.src.toServer(101, netip.AddrFrom4([4]byte{10, 1, 0, byte(i)}).String(), uint64(100-i), 0, time.Millisecond)
	}
	f.step()
	cr := rowByPod(f.frame(t, &isoobsv1.TopRequest{}), "crawler-7d9f-a")
	if len(cr.Servers) != maxRowServers+1 {
		t.Fatalf("%d servers in the row, want %d and other", len(cr.Servers), maxRowServers)
	}
	var sum uint64
	for _, s := range cr.Servers {
		sum += s.Queries
	}
	if last := cr.Servers[len(cr.Servers)-1]; last.Address != otherServer || sum != cr.Queries {
		t.Errorf("servers %v: the last must be %q and all must sum to the row's %d queries (got %d)", cr.Servers, otherServer, cr.Queries, sum)
	}
	if n := len(f.c.subjects[uidCrawler].servers.by); n != maxSubjectServers {
		t.Errorf("the pod keeps %d servers, want %d", n, maxSubjectServers)
	}
}
