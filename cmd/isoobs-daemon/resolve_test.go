package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/isoobs/isoobs/verify"
)

// fakeDNS answers a.test. with 192.0.2.1, nx.test. with NXDOMAIN and never answers drop.test.;
// it counts the queries it got per name.
type fakeDNS struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  map[string]int
}

func startFakeDNS(t *testing.T) *fakeDNS {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeDNS{conn: conn, got: map[string]int{}}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			var m dnsmessage.Message
			if m.Unpack(buf[:n]) != nil || len(m.Questions) != 1 {
				continue
			}
			q := m.Questions[0]
			s.mu.Lock()
			s.got[q.Name.String()]++
			s.mu.Unlock()
			resp := dnsmessage.Message{Header: dnsmessage.Header{ID: m.ID, Response: true}, Questions: m.Questions}
			switch q.Name.String() {
			case "a.test.":
				resp.Answers = []dnsmessage.Resource{{Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 5},
					Body: &dnsmessage.AResource{A: [4]byte{192, 0, 2, 1}}}}
			case "nx.test.":
				resp.RCode = dnsmessage.RCodeNameError
			default:
				continue // dropped
			}
			// A stray answer with another ID first: the probe must ignore it.
			stray := resp
			stray.ID++
			if b, err := stray.Pack(); err == nil {
				_, _ = conn.WriteToUDP(b, from)
			}
			if b, err := resp.Pack(); err == nil {
				_, _ = conn.WriteToUDP(b, from)
			}
		}
	}()
	return s
}

func TestResolveCommand(t *testing.T) {
	s := startFakeDNS(t)
	cmd := newCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"resolve", "--server", s.conn.LocalAddr().String(), "--timeout", "300ms", "a.test", "nx.test.", "drop.test"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	// What the plugin reads: verify.DNSProbeReport from the one JSON line.
	rep, err := verify.ParseDNSProbeLog(out.Bytes())
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if rep.Server != s.conn.LocalAddr().String() || len(rep.Results) != 3 {
		t.Fatalf("report %+v", rep)
	}
	a, nx, drop := rep.Results[0], rep.Results[1], rep.Results[2]
	if a.Name != "a.test" || a.Type != "A" || !a.Sent || a.Rcode != "NOERROR" || len(a.Answers) != 1 || a.Answers[0] != "192.0.2.1" || a.Error != "" {
		t.Errorf("a.test: %+v", a)
	}
	if nx.Name != "nx.test" || !nx.Sent || nx.Rcode != "NXDOMAIN" || len(nx.Answers) != 0 {
		t.Errorf("nx.test: %+v", nx)
	}
	if !drop.Sent || drop.Rcode != "" || drop.Error != "no answer within 300ms" {
		t.Errorf("drop.test: %+v", drop)
	}
	if got, want := rep.Expected(), (verify.DNSCounts{Queries: 3, Responses: 2, NXDomain: 1}); got != want {
		t.Errorf("expected %+v, want %+v", got, want)
	}
	// Exactly one query per name reached the server: no retries, no search list, no AAAA.
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.got) != 3 || s.got["a.test."] != 1 || s.got["nx.test."] != 1 || s.got["drop.test."] != 1 {
		t.Errorf("server got %v, want one query for each of a.test. nx.test. drop.test.", s.got)
	}
	if !json.Valid(bytes.TrimSpace(out.Bytes())) || strings.Count(strings.TrimSpace(out.String()), "\n") != 0 {
		t.Errorf("output is not one JSON line: %q", out.String())
	}
}

func TestResolveBadInput(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(empty, []byte("search svc.cluster.local\noptions ndots:5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"resolve"}, "requires at least 1 arg"},
		{[]string{"resolve", "--resolv-conf", empty, "a.test"}, "has no nameserver line (pass --server)"},
		{[]string{"resolve", "--resolv-conf", filepath.Join(dir, "none"), "a.test"}, "reading the nameserver"},
		{[]string{"resolve", "--server", "127.0.0.1", "a..test"}, `"a..test" is not a DNS name`},
		{[]string{"resolve", "--timeout", "0s", "a.test"}, "--timeout 0s must be positive"},
	} {
		cmd := newCommand()
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		cmd.SetArgs(tc.args)
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestNameserver(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(p, []byte("search isoobs.svc.cluster.local svc.cluster.local\nnameserver fd00::a\nnameserver 10.96.0.10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := nameserver(p); err != nil || got != "[fd00::a]:53" {
		t.Errorf("nameserver %q %v", got, err)
	}
}
