package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/isoobs/isoobs/daemon"
	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/podnet"
)

// A DNS server that drops every third query of one client pod and answers the other pod's
// all: the first pod's timeouts equal exactly what the server dropped, the other's are 0,
// and the answered queries are responses as usual.
func TestTimeoutsPerPod(t *testing.T) {
	lab := testlab.StartForTest(t, testlab.Options{Nodes: []string{nodeA}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, app := range []string{"lossy-dns", "unlucky", "lucky"} {
		if err := lab.Apply(ctx, pinnedDeployment(app, nodeA)); err != nil {
			t.Fatal(err)
		}
	}
	server, unlucky, lucky := adopted(t, ctx, lab, "lossy-dns"), adopted(t, ctx, lab, "unlucky"), adopted(t, ctx, lab, "lucky")
	const timeout = time.Second
	a := startDaemonWith(t, lab, nodeA, func(c *daemon.Config) { c.DNSTimeout = timeout })

	sc := startPodHelper(t, ctx, server, "LossyDNS", "E2E_LOSSY_DROP_FROM="+unlucky.IPv4.String())
	const queries = 30
	for _, p := range []*podnet.Pod{unlucky, lucky} {
		cc := p.Command(ctx, os.Args[0], "-test.run=^TestHelperBurstClient$")
		cc.Env = append(os.Environ(), "E2E_BURST_SERVER="+netip.AddrPortFrom(server.IPv4, 53).String(), "E2E_BURST_QUERIES="+strconv.Itoa(queries))
		if b, err := cc.CombinedOutput(); err != nil {
			t.Fatalf("client %s: %v\n%s", p.Name, err, b)
		}
	}
	var got lossyResult
	sc.summary(&got)
	if got.Dropped != queries/3 || got.Answered != 2*queries-queries/3 {
		t.Fatalf("server answered %d and dropped %d, want %d and %d", got.Answered, got.Dropped, 2*queries-queries/3, queries/3)
	}
	r := waitRow(t, a, unlucky, counts{Queries: queries, Responses: queries - got.Dropped, NoError: queries - got.Dropped})
	waitRow(t, a, lucky, counts{Queries: queries, Responses: queries, NoError: queries})
	// A dropped query is a timeout once it has waited DNSTimeout.
	deadline := time.Now().Add(timeout + 10*time.Second)
	for r.Timeouts != got.Dropped && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		r = findRow(a.rows(t), unlucky)
	}
	if r.Timeouts != got.Dropped || r.Evicted != 0 || r.Unsolicited != 0 {
		t.Errorf("%s: timeouts %d, evicted %d, unsolicited %d; want %d (the server dropped them), 0, 0", unlucky.Name, r.Timeouts, r.Evicted, r.Unsolicited, got.Dropped)
	}
	if l := findRow(a.rows(t), lucky); l.Timeouts != 0 {
		t.Errorf("%s: %d timeouts, want 0", lucky.Name, l.Timeouts)
	}
}

type lossyResult struct{ Answered, Dropped uint64 }

// TestHelperLossyDNS is the server process of TestTimeoutsPerPod: NOERROR (no answer records)
// to every query, except every third query from E2E_LOSSY_DROP_FROM, which it drops. It prints
// "ready", then a JSON summary once no query has come for two seconds.
func TestHelperLossyDNS(t *testing.T) {
	dropFrom := os.Getenv("E2E_LOSSY_DROP_FROM")
	if dropFrom == "" {
		t.Skip("helper process for TestTimeoutsPerPod")
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{Port: 53})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Println("ready")
	var res lossyResult
	var fromDropped int
	buf := make([]byte, 1500)
	for {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			break
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		if from.IP.String() == dropFrom {
			if fromDropped++; fromDropped%3 == 0 {
				res.Dropped++
				continue
			}
		}
		msg := dnsmessage.Message{Header: dnsmessage.Header{ID: h.ID, Response: true, RecursionDesired: h.RecursionDesired},
			Questions: []dnsmessage.Question{q}}
		a, err := msg.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WriteToUDP(a, from); err != nil {
			t.Fatal(err)
		}
		res.Answered++
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}

// TestHelperBurstClient is the client process of TestTimeoutsPerPod: E2E_BURST_QUERIES queries,
// each with its own id, sent 20 ms apart from one socket; it then reads answers for a second.
func TestHelperBurstClient(t *testing.T) {
	server := os.Getenv("E2E_BURST_SERVER")
	if server == "" {
		t.Skip("helper process for TestTimeoutsPerPod")
	}
	n, _ := strconv.Atoi(os.Getenv("E2E_BURST_QUERIES"))
	c, err := net.Dial("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < n; i++ {
		msg := dnsmessage.Message{Header: dnsmessage.Header{ID: uint16(500 + i), RecursionDesired: true},
			Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(fmt.Sprintf("q%d.lossy.test.", i)), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
		q, err := msg.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(q); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(time.Second))
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}
