package main

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// The test binary runs main() when asked, so the real command line is exercised.
func TestMain(m *testing.M) {
	if os.Getenv("DNSGEN_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runMain(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	self, _ := os.Executable()
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), "DNSGEN_RUN_MAIN=1")
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func TestBadFlagsExplainAndExit2(t *testing.T) {
	_, stderr, code := runMain(t, "--names", "x", "--count", "1")
	if code != 2 || !strings.Contains(stderr, "--server") {
		t.Errorf("missing server: code %d, %q", code, stderr)
	}
	_, stderr, code = runMain(t, "--server", "127.0.0.1", "--names", "x")
	if code != 2 || !strings.Contains(stderr, "--count") {
		t.Errorf("unbounded run: code %d, %q", code, stderr)
	}
	if _, _, code = runMain(t, "-h"); code != 0 {
		t.Errorf("-h exit %d", code)
	}
}

func TestPrintsJSONReport(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() { // answers NXDOMAIN to everything
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, _ := p.Question()
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, RCode: dnsmessage.RCodeNameError})
			_ = b.StartQuestions()
			_ = b.Question(q)
			msg, _ := b.Finish()
			_, _ = pc.WriteTo(msg, from)
		}
	}()
	stdout, stderr, code := runMain(t, "--server", pc.LocalAddr().String(), "--random-suffix", "example.com", "--count", "25", "--concurrency", "5")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep struct {
		Sent, Answered uint64
		RCodes         map[string]uint64 `json:"rcodes"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("report %q: %v", stdout, err)
	}
	if rep.Sent != 25 || rep.Answered != 25 || rep.RCodes["NXDOMAIN"] != 25 {
		t.Errorf("report %+v", rep)
	}
}
