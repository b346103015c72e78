package main

// The demo's second act: the crawler also hammers a service that resets every connection, and
// `kubectl isoobs top tcp` names both ends — the crawler ranked first by errors with that
// service's pod as its top peer, and the service's pod sending the resets — counted exactly
// against the crawler's own tally.
//
// The helpers run as processes inside the pods (Pod.Command: the pod's cgroup and netns), so the
// probe attributes their sockets to the pods: this binary (or the test binary) started again with
// ISOOBS_DEMO_TCP set.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/isoobs/isoobs/testlab/scenario"
)

// demoTCPEnv selects a helper role: "reset-server ADDR" or "connect ADDR COUNT PER-SECOND".
const demoTCPEnv = "ISOOBS_DEMO_TCP"

// resetPort is where the resetting service listens in its pod.
const resetPort = 8080

// connectReport is what the connecting helper prints: its own tally.
type connectReport struct {
	Connects int `json:"connects"` // connections established
	Resets   int `json:"resets"`   // of those, reset by the server (ECONNRESET)
	Failed   int `json:"failed"`   // connects that failed
}

// runDemoHelper runs the helper role in os.Getenv(demoTCPEnv), if any, and exits.
func runDemoHelper() {
	role := strings.Fields(os.Getenv(demoTCPEnv))
	if len(role) == 0 {
		return
	}
	if err := demoHelper(role); err != nil {
		fmt.Fprintln(os.Stderr, "isoobs-demo helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func demoHelper(role []string) error {
	switch {
	case role[0] == "reset-server" && len(role) == 2:
		ln, err := net.Listen("tcp", role[1])
		if err != nil {
			return err
		}
		fmt.Println("listening")
		for {
			c, err := ln.Accept()
			if err != nil {
				return err
			}
			_ = c.(*net.TCPConn).SetLinger(0) // close sends a RST, not a FIN
			c.Close()
		}
	case role[0] == "connect" && len(role) == 4:
		n, err1 := strconv.Atoi(role[2])
		rate, err2 := strconv.ParseFloat(role[3], 64)
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		var r connectReport
		tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer tick.Stop()
		for range n {
			<-tick.C
			c, err := net.DialTimeout("tcp", role[1], 2*time.Second)
			if errors.Is(err, syscall.ECONNRESET) {
				// The server's RST came before connect returned: connected, then reset.
				r.Connects++
				r.Resets++
				continue
			}
			if err != nil {
				r.Failed++
				continue
			}
			r.Connects++
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Read(make([]byte, 1)); errors.Is(err, syscall.ECONNRESET) {
				r.Resets++
			}
			c.Close()
		}
		return json.NewEncoder(os.Stdout).Encode(r)
	}
	return fmt.Errorf("unknown role %q", role)
}

// tcpRowCounts is what the act reads of a top tcp row.
type tcpRowCounts struct {
	Pod            string `json:"pod"`
	ActiveOpens    uint64 `json:"activeOpens"`
	PassiveOpens   uint64 `json:"passiveOpens"`
	ResetsSent     uint64 `json:"resetsSent"`
	ResetsReceived uint64 `json:"resetsReceived"`
	TopPeers       []struct {
		IP             string  `json:"ip"`
		Port           uint32  `json:"port"`
		Kind           string  `json:"kind"`
		Name           string  `json:"name"`
		ResetsReceived uint64  `json:"resetsReceived"`
		Share          float64 `json:"share"`
	} `json:"topPeers"`
}

// tcpAct plays the second act. bin holds kubectl-isoobs; kubeconfig is the lab's.
func tcpAct(ctx context.Context, app *scenario.App, bin, kubeconfig string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	crawler := app.CrawlerPod()
	servers := app.Pods("resumes")
	if len(servers) == 0 || crawler.Net == nil || servers[0].Net == nil {
		return errors.New("tcp act: no resumes pod or crawler on this host")
	}
	server := servers[0]
	serverIP := server.Net.IPv4
	if !serverIP.IsValid() {
		return fmt.Errorf("tcp act: %s has no IPv4 address", server.API.Name)
	}
	addr := netip.AddrPortFrom(serverIP, resetPort).String()
	topTCP := func(extra ...string) *exec.Cmd {
		args := append([]string{"top", "tcp", "-A", "--kubeconfig", kubeconfig}, extra...)
		return exec.Command(filepath.Join(bin, "kubectl-isoobs"), args...)
	}
	rows := func() (map[string]tcpRowCounts, error) {
		out, err := topTCP("-o", "json", "--once").Output()
		if err != nil {
			return nil, fmt.Errorf("kubectl isoobs top tcp -o json --once: %w", err)
		}
		var f struct {
			Rows []tcpRowCounts `json:"rows"`
		}
		if err := json.Unmarshal(out, &f); err != nil {
			return nil, err
		}
		m := map[string]tcpRowCounts{}
		for _, r := range f.Rows {
			m[r.Pod] = r
		}
		return m, nil
	}

	step("act two: %s (the resumes service) now resets every connection on :%d", server.API.Name, resetPort)
	srv := server.Net.Command(ctx, self)
	srv.Env = append(os.Environ(), demoTCPEnv+"=reset-server "+netip.AddrPortFrom(serverIP, resetPort).String())
	srvOut, err := srv.StdoutPipe()
	if err != nil {
		return err
	}
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		return fmt.Errorf("start the resetting server: %w", err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	if _, err := srvOut.Read(make([]byte, 16)); err != nil { // "listening"
		return fmt.Errorf("the resetting server did not start: %w", err)
	}
	before, err := rows()
	if err != nil {
		return err
	}
	const connects, perSecond = 400, 100.0
	step("the crawler hammers it: %d connections at %.0f/s to %s", connects, perSecond, addr)
	gen := crawler.Net.Command(ctx, self)
	gen.Env = append(os.Environ(), fmt.Sprintf("%s=connect %s %d %g", demoTCPEnv, addr, connects, perSecond))
	gen.Stderr = os.Stderr
	genDone := make(chan struct{})
	var genOut []byte
	var genErr error
	go func() {
		genOut, genErr = gen.Output()
		close(genDone)
	}()
	time.Sleep(2 * time.Second)
	step("kubectl isoobs top tcp -A --duration 2s   (while the crawler's connections are reset)")
	if err := runTo(topTCP("--duration", "2s", "--limit", "4")); err != nil {
		return err
	}
	<-genDone
	if genErr != nil {
		return fmt.Errorf("the crawler's connections: %w", genErr)
	}
	var report connectReport
	if err := json.Unmarshal(genOut, &report); err != nil {
		return fmt.Errorf("the crawler's tally %q: %w", genOut, err)
	}
	step("kubectl isoobs top tcp -A --group-by peer --once   (whom the pods' connections failed against)")
	if err := runTo(topTCP("--group-by", "peer", "--once", "--limit", "4")); err != nil {
		return err
	}
	step("ground truth from the crawler's own tally")
	fmt.Printf("connected %d  reset by the server %d  failed %d\n", report.Connects, report.Resets, report.Failed)
	// The daemons read the kernel once a second: wait until the counts catch up (or 10 s).
	var cr, sv tcpRowCounts
	crName, svName := crawler.API.Name, server.API.Name
	deadline := time.Now().Add(10 * time.Second)
	for {
		after, err := rows()
		if err != nil {
			return err
		}
		cr, sv = after[crName], after[svName]
		cr.ResetsReceived -= before[crName].ResetsReceived
		cr.ActiveOpens -= before[crName].ActiveOpens
		sv.ResetsSent -= before[svName].ResetsSent
		if (cr.ResetsReceived == uint64(report.Resets) && sv.ResetsSent == uint64(report.Resets)) || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	exact := cr.ResetsReceived == uint64(report.Resets) && sv.ResetsSent == uint64(report.Resets) && cr.ActiveOpens == uint64(report.Connects)
	fmt.Printf("isoobs counted %d connections of the crawler, %d resets received by it and %d sent by %s, for its %d connections and %d resets: exact %v\n",
		cr.ActiveOpens, cr.ResetsReceived, sv.ResetsSent, svName, report.Connects, report.Resets, exact)
	if !exact {
		return fmt.Errorf("top tcp counted %d opens and %d/%d resets for the crawler's %d connections and %d resets", cr.ActiveOpens, cr.ResetsReceived, sv.ResetsSent, report.Connects, report.Resets)
	}
	if report.Resets != connects {
		return fmt.Errorf("the resetting server reset %d of the crawler's %d connections", report.Resets, connects)
	}
	if len(cr.TopPeers) == 0 || cr.TopPeers[0].IP != serverIP.String() || cr.TopPeers[0].Port != resetPort || cr.TopPeers[0].Name != svName {
		return fmt.Errorf("the crawler's top peer is %+v, want pod %s at %s", cr.TopPeers, svName, addr)
	}
	fmt.Printf("the crawler's top peer: pod/%s/%s:%d, %.0f%% of its errors\n", scenario.Namespace, svName, resetPort, cr.TopPeers[0].Share)
	return nil
}
