package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/isoobs/isoobs/testlab"
)

// victimPort is the UDP port the victim's resolver socket is bound to: the
// forger aims at it (a real attacker would learn it by sniffing or guessing).
const victimPort = 40053

// A pod floods forged NXDOMAIN answers (source port 53) at another pod's UDP
// socket while that pod resolves names for real: the victim's row keeps the
// rcodes and names of its own answers, and unsolicited counts exactly the
// forged packets the victim's socket received.
func TestForgedAnswersAreUnsolicited(t *testing.T) {
	lab := testlab.StartForTest(t, testlab.Options{Nodes: []string{nodeA}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, app := range []string{"victim", "forger"} {
		if err := lab.Apply(ctx, pinnedDeployment(app, nodeA)); err != nil {
			t.Fatal(err)
		}
	}
	victim := adopted(t, ctx, lab, "victim")
	forger := adopted(t, ctx, lab, "forger")
	a := startDaemon(t, lab, nodeA)

	const noerror, nxdomain, forged = 20, 10, 500
	vc := startPodHelper(t, ctx, victim, "Victim", "E2E_VICTIM_SERVER="+netip.AddrPortFrom(lab.DNSServiceIP, 53).String(),
		"E2E_VICTIM_QUERIES="+strconv.Itoa(noerror)+","+strconv.Itoa(nxdomain)) // its own queries are answered; the socket stays open
	fc := forger.Command(ctx, os.Args[0], "-test.run=^TestHelperForger$")
	fc.Env = append(os.Environ(), "E2E_FORGER_TARGET="+netip.AddrPortFrom(victim.IPv4, victimPort).String(),
		"E2E_FORGER_ANSWERS="+strconv.Itoa(forged))
	if b, err := fc.CombinedOutput(); err != nil {
		t.Fatalf("forger: %v\n%s", err, b)
	}
	var got victimResult
	vc.summary(&got)
	if got.NoError != noerror || got.NXDomain != nxdomain || got.Unexpected != forged {
		t.Fatalf("the victim's socket got %+v; want %d NOERROR, %d NXDOMAIN answers to its queries and %d forged packets", got, noerror, nxdomain, forged)
	}
	r := waitRow(t, a, victim, counts{Queries: noerror + nxdomain, Responses: noerror + nxdomain, NoError: noerror, NXDomain: nxdomain, Unsolicited: forged})
	for _, n := range r.TopNames {
		if strings.HasPrefix(n.Name, "forged-") {
			t.Errorf("a forged answer's name reached the victim's top names: %+v", n)
		}
		if n.Name == "nx-victim.example.com" && n.Nxdomain != nxdomain {
			t.Errorf("%s: %d NXDOMAIN, want %d", n.Name, n.Nxdomain, nxdomain)
		}
	}
}

type victimResult struct {
	NoError, NXDomain uint64
	Unexpected        uint64 // packets that answer none of its queries
}

// TestHelperVictim is the victim process of TestForgedAnswersAreUnsolicited
// (run inside a lab pod): it resolves names one at a time from a socket bound
// to victimPort, prints "ready", then counts every other packet the socket
// receives until none has come for a second, and prints a JSON summary.
func TestHelperVictim(t *testing.T) {
	server := os.Getenv("E2E_VICTIM_SERVER")
	if server == "" {
		t.Skip("helper process for TestForgedAnswersAreUnsolicited")
	}
	var noerror, nxdomain int
	if _, err := fmt.Sscanf(os.Getenv("E2E_VICTIM_QUERIES"), "%d,%d", &noerror, &nxdomain); err != nil {
		t.Fatal(err)
	}
	to, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{Port: victimPort})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var res victimResult
	buf := make([]byte, 1500)
	ask := func(id uint16, name string) {
		msg := dnsmessage.Message{Header: dnsmessage.Header{ID: id, RecursionDesired: true},
			Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
		q, err := msg.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WriteToUDP(q, to); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				t.Fatalf("no answer to %s: %v", name, err)
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil || h.ID != id || from.Port != 53 {
				continue
			}
			if h.RCode == dnsmessage.RCodeNameError {
				res.NXDomain++
			} else if h.RCode == dnsmessage.RCodeSuccess {
				res.NoError++
			}
			return
		}
	}
	for i := 0; i < noerror; i++ {
		ask(uint16(100+i), "c.noerror.test.")
	}
	for i := 0; i < nxdomain; i++ {
		ask(uint16(200+i), "nx-victim.example.com.")
	}
	fmt.Println("ready")
	for {
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(buf); err != nil {
			break
		}
		res.Unexpected++
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}

// TestHelperForger is the forger process of TestForgedAnswersAreUnsolicited:
// NXDOMAIN answers from port 53, each for a name and id nobody asked for.
func TestHelperForger(t *testing.T) {
	target := os.Getenv("E2E_FORGER_TARGET")
	if target == "" {
		t.Skip("helper process for TestForgedAnswersAreUnsolicited")
	}
	n, _ := strconv.Atoi(os.Getenv("E2E_FORGER_ANSWERS"))
	to, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{Port: 53})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < n; i++ {
		msg := dnsmessage.Message{
			Header: dnsmessage.Header{ID: uint16(30000 + i), Response: true, RCode: dnsmessage.RCodeNameError},
			Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(fmt.Sprintf("forged-%d.bank.example.", i)),
				Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
		a, err := msg.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WriteToUDP(a, to); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			time.Sleep(time.Millisecond) // the victim's socket buffer must not overflow: it counts what it got
		}
	}
}
