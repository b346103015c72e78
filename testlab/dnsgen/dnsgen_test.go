package dnsgen

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// fakeServer answers by the first label of the query name that is one of: ok → NOERROR, nx → NXDOMAIN,
// sf → SERVFAIL, ref → REFUSED, drop → no answer, dup → a stray answer with a wrong ID first.
// It counts what it received, independently of the generator.
type fakeServer struct {
	mu       sync.Mutex
	received map[string]int
	addr     netip.AddrPort
	close    func()
}

func (s *fakeServer) answer(q []byte) [][]byte {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil
	}
	qq, err := p.Question()
	if err != nil {
		return nil
	}
	name := qq.Name.String()
	s.mu.Lock()
	s.received[name]++
	s.mu.Unlock()
	build := func(id uint16, rc dnsmessage.RCode) []byte {
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, Response: true, RCode: rc})
		_ = b.StartQuestions()
		_ = b.Question(qq)
		m, _ := b.Finish()
		return m
	}
	var kind string
	for _, label := range strings.Split(name, ".") {
		if strings.Contains(" ok nx sf ref dup ", " "+label+" ") {
			kind = label
			break
		}
	}
	switch kind {
	case "ok":
		return [][]byte{build(h.ID, dnsmessage.RCodeSuccess)}
	case "nx":
		return [][]byte{build(h.ID, dnsmessage.RCodeNameError)}
	case "sf":
		return [][]byte{build(h.ID, dnsmessage.RCodeServerFailure)}
	case "ref":
		return [][]byte{build(h.ID, dnsmessage.RCodeRefused)}
	case "dup":
		return [][]byte{build(h.ID+1, dnsmessage.RCodeSuccess), build(h.ID, dnsmessage.RCodeSuccess)}
	}
	return nil
}

func startFakeServer(t *testing.T, proto string) *fakeServer {
	t.Helper()
	s := &fakeServer{received: map[string]int{}}
	switch proto {
	case "udp":
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s.addr = pc.LocalAddr().(*net.UDPAddr).AddrPort()
		s.close = func() { pc.Close() }
		go func() {
			buf := make([]byte, 4096)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				for _, r := range s.answer(append([]byte(nil), buf[:n]...)) {
					_, _ = pc.WriteTo(r, from)
				}
			}
		}()
	case "tcp":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s.addr = ln.Addr().(*net.TCPAddr).AddrPort()
		s.close = func() { ln.Close() }
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					for {
						var l [2]byte
						if _, err := io.ReadFull(c, l[:]); err != nil {
							return
						}
						q := make([]byte, binary.BigEndian.Uint16(l[:]))
						if _, err := io.ReadFull(c, q); err != nil {
							return
						}
						for _, r := range s.answer(q) {
							_, _ = c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(r))), r...))
						}
					}
				}()
			}
		}()
	}
	t.Cleanup(s.close)
	return s
}

func TestRunAccountsForEveryQuery(t *testing.T) {
	for _, proto := range []string{"udp", "tcp"} {
		t.Run(proto, func(t *testing.T) {
			srv := startFakeServer(t, proto)
			names := []string{"ok.x", "nx.x", "sf.x", "ref.x", "drop.x", "dup.x"}
			rep, err := Run(context.Background(), Config{
				Server: srv.addr, Proto: proto, Names: names, QTypes: []string{"A", "AAAA"},
				Count: 60, Concurrency: 3, Timeout: 150 * time.Millisecond, PerName: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Sent != 60 || rep.Answered != 50 || rep.Timeouts != 10 || rep.Failed != 0 || rep.SendErrors != 0 {
				t.Fatalf("report %+v", rep)
			}
			if rep.Sent != rep.Answered+rep.Timeouts+rep.Failed {
				t.Fatalf("outcomes do not add up: %+v", rep)
			}
			want := RCodes{NoError: 20, NXDomain: 10, ServFail: 10, Refused: 10}
			if rep.RCodes != want {
				t.Errorf("rcodes %+v, want %+v", rep.RCodes, want)
			}
			if rep.Discarded != 10 {
				t.Errorf("discarded %d, want 10 stray answers", rep.Discarded)
			}
			if rep.ByQType["A"] != 30 || rep.ByQType["AAAA"] != 30 {
				t.Errorf("qtypes %v", rep.ByQType)
			}
			srv.mu.Lock()
			defer srv.mu.Unlock()
			for _, n := range names {
				if srv.received[n+"."] != 10 || rep.Names[n+"."].Sent != 10 {
					t.Errorf("%s: server received %d, generator sent %+v", n, srv.received[n+"."], rep.Names[n+"."])
				}
			}
			if rep.Names["drop.x."].Answered != 0 || rep.Names["sf.x."].RCodes.ServFail != 10 {
				t.Errorf("per-name counts %+v %+v", rep.Names["drop.x."], rep.Names["sf.x."])
			}
			if rep.Latency.P50Micros <= 0 || rep.Latency.MaxMicros < rep.Latency.P99Micros || rep.Latency.P99Micros < rep.Latency.P50Micros {
				t.Errorf("latency %+v", rep.Latency)
			}
		})
	}
}

func TestRandomSubdomainsAndMix(t *testing.T) {
	srv := startFakeServer(t, "udp")
	rep, err := Run(context.Background(), Config{Server: srv.addr, RandomSuffix: "ok.example.com", Count: 200, Concurrency: 4, PerName: true, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Names) < 195 { // 36^12 possibilities: collisions are practically impossible
		t.Errorf("only %d distinct random names", len(rep.Names))
	}
	for n := range rep.Names {
		if !strings.HasSuffix(n, ".ok.example.com.") || len(n) != len("abcdefghijkl.ok.example.com.") {
			t.Fatalf("random name %q", n)
		}
	}
	rep, err = Run(context.Background(), Config{Server: srv.addr, Names: []string{"ok.fixed"}, RandomSuffix: "nx.y", RandomFraction: 0.25,
		Count: 400, Concurrency: 8, PerName: true, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	fixed := rep.Names["ok.fixed."].Sent
	if rep.Sent != 400 || fixed < 240 || fixed > 360 {
		t.Errorf("mix: %d of %d fixed, want about 300", fixed, rep.Sent)
	}
	if rep.RCodes.NoError != fixed || rep.RCodes.NXDomain != rep.Sent-fixed {
		t.Errorf("mix rcodes %+v, fixed %d", rep.RCodes, fixed)
	}
}

func TestRateLimitAndDuration(t *testing.T) {
	srv := startFakeServer(t, "udp")
	start := time.Now()
	rep, err := Run(context.Background(), Config{Server: srv.addr, Names: []string{"ok.x"}, QPS: 200, Count: 50, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	// A limiter with burst 1 needs at least 49 intervals of 5ms: a lower bound, so never flaky.
	if rep.Sent != 50 || time.Since(start) < 245*time.Millisecond {
		t.Errorf("50 queries at 200 qps took %s (sent %d)", time.Since(start), rep.Sent)
	}
	rep, err = Run(context.Background(), Config{Server: srv.addr, Names: []string{"ok.x"}, QPS: 100, Duration: 300 * time.Millisecond, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sent == 0 || rep.Sent > 31 || rep.Sent != rep.Answered {
		t.Errorf("300ms at 100 qps sent %d answered %d (at most 31 allowed)", rep.Sent, rep.Answered)
	}
}

func TestRunReportsUnreachableServer(t *testing.T) {
	// A closed TCP port on loopback: every connect is refused.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	rep, err := Run(context.Background(), Config{Server: addr, Proto: "tcp", Names: []string{"ok.x"}, Count: 3})
	if err == nil || !strings.Contains(err.Error(), "reachable") || rep.Sent != 0 || rep.SendErrors != 3 {
		t.Fatalf("want unreachable error, got %v %+v", err, rep)
	}
}

func TestFlagsRoundTrip(t *testing.T) {
	cfg := Config{
		Server: netip.MustParseAddrPort("[fd96::a]:5353"), Proto: "tcp",
		Names: []string{"a.example.com.", "b.example.com."}, RandomSuffix: "example.org", RandomFraction: 0.3,
		QTypes: []string{"A", "AAAA"}, QPS: 1500, Concurrency: 16, Count: 1000, Duration: 3 * time.Second,
		Timeout: time.Second, PerName: true, Seed: 42,
	}
	got, err := ParseFlags(cfg.Args(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got.Dial = nil
	if !reflect.DeepEqual(got, cfg) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, cfg)
	}
	if got, err := ParseFlags([]string{"--server", "10.96.0.10", "--names", "x"}, io.Discard); err == nil {
		t.Errorf("no count/duration accepted: %+v", got)
	}
	bad := map[string][]string{
		"no server":    {"--names", "x", "--count", "1"},
		"bad server":   {"--server", "dns.local", "--names", "x", "--count", "1"},
		"no names":     {"--server", "10.0.0.1", "--count", "1"},
		"bad qtype":    {"--server", "10.0.0.1", "--names", "x", "--count", "1", "--qtype", "BOGUS"},
		"bad proto":    {"--server", "10.0.0.1", "--names", "x", "--count", "1", "--proto", "quic"},
		"negative qps": {"--server", "10.0.0.1", "--names", "x", "--count", "1", "--qps", "-1"},
		"bad fraction": {"--server", "10.0.0.1", "--names", "x", "--random-suffix", "y", "--random-fraction", "2", "--count", "1"},
		"bad name":     {"--server", "10.0.0.1", "--names", strings.Repeat("a", 70) + ".com", "--count", "1"},
		"stray arg":    {"--server", "10.0.0.1", "--names", "x", "--count", "1", "extra"},
	}
	for name, args := range bad {
		if _, err := ParseFlags(args, io.Discard); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if ap, _ := ParseServer("10.96.0.10"); ap.String() != "10.96.0.10:53" {
		t.Errorf("default port: %s", ap)
	}
	if ap, _ := ParseServer("fd96::a"); ap.String() != "[fd96::a]:53" {
		t.Errorf("bare v6: %s", ap)
	}
}

func TestPercentiles(t *testing.T) {
	var lat []time.Duration
	for i := 100; i >= 1; i-- {
		lat = append(lat, time.Duration(i)*time.Microsecond)
	}
	got := percentiles(lat)
	want := Latency{P50Micros: 50, P90Micros: 90, P99Micros: 99, MaxMicros: 100}
	if got != want {
		t.Errorf("got %+v want %+v", got, want)
	}
	if (percentiles(nil) != Latency{}) {
		t.Error("empty")
	}
}

const dnsperfSample = `DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 5399 -d q.txt -n 1000 -c 4 -q 50
[Timeout] Query timed out: msg id 0
[Status] Testing complete (end of file)

Statistics:

  Queries sent:         2000
  Queries completed:    1985 (99.25%)
  Queries lost:         15 (0.75%)

  Response codes:       SERVFAIL 993 (50.03%), NXDOMAIN 992 (49.97%)
  Average packet size:  request 32, response 32
  Run time (s):         0.583990
  Queries per second:   3399.030805

  Average Latency (s):  0.009533 (min 0.000014, max 0.479274)
  Latency StdDev (s):   0.061836

Connection Statistics:

  Reconnections:        0

  Average Latency (s):  0.048756 (min 0.048756, max 0.048756)
`

func TestParseDNSPerf(t *testing.T) {
	r, err := ParseDNSPerf(dnsperfSample)
	if err != nil {
		t.Fatal(err)
	}
	want := &DNSPerfResult{Sent: 2000, Completed: 1985, Lost: 15, RCodes: map[string]uint64{"SERVFAIL": 993, "NXDOMAIN": 992},
		RunTimeSec: 0.58399, QPS: 3399.030805, AvgLatencySec: 0.009533, MinLatencySec: 0.000014, MaxLatencySec: 0.479274, LatencyStdDevSec: 0.061836}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("got %+v\nwant %+v", r, want)
	}
	for _, bad := range []string{"", "Statistics:\n  Queries sent: 1\n", "Statistics:\n Queries sent: x\n Queries completed: 1\n Queries lost: 0\n",
		"Statistics:\n Queries sent: 1\n Queries completed: 1\n Queries lost: 0\n Response codes: NOERROR\n"} {
		if _, err := ParseDNSPerf(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzParseDNSPerf(f *testing.F) {
	f.Add(dnsperfSample)
	f.Add("Statistics:\n Response codes: NOERROR 1 (100%), , X\n")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseDNSPerf(s)
		if err == nil && r == nil {
			t.Fatal("nil result without error")
		}
	})
}

// FuzzMatchResponse feeds arbitrary bytes to the response matcher: it must never panic, and a
// message only matches a query with the same ID and question.
func FuzzMatchResponse(f *testing.F) {
	q, _ := buildQuery(0x1234, "www.example.com.", dnsmessage.TypeA)
	resp := append([]byte(nil), q...)
	resp[2] |= 0x80 // QR
	f.Add(resp)
	f.Add(q)
	f.Add([]byte{0x12, 0x34, 0x80, 0x02, 0, 0, 0, 0, 0, 0, 0, 0}) // SERVFAIL without question
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, msg []byte) {
		h, ok := matchResponse(msg, 0x1234, "www.example.com.", dnsmessage.TypeA)
		if ok && (h.ID != 0x1234 || !h.Response) {
			t.Fatalf("matched a message with ID %#x response=%v", h.ID, h.Response)
		}
	})
}

func TestMatchResponse(t *testing.T) {
	q, _ := buildQuery(7, "a.example.com.", dnsmessage.TypeAAAA)
	if _, ok := matchResponse(q, 7, "a.example.com.", dnsmessage.TypeAAAA); ok {
		t.Error("a query (QR=0) matched")
	}
	r := append([]byte(nil), q...)
	r[2] |= 0x80
	if _, ok := matchResponse(r, 7, "A.EXAMPLE.COM.", dnsmessage.TypeAAAA); !ok {
		t.Error("case-insensitive name did not match")
	}
	if _, ok := matchResponse(r, 8, "a.example.com.", dnsmessage.TypeAAAA); ok {
		t.Error("other ID matched")
	}
	if _, ok := matchResponse(r, 7, "a.example.com.", dnsmessage.TypeA); ok {
		t.Error("other qtype matched")
	}
}
