package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/testlab/podnet"
)

// tcpHelperEnv makes this test binary a TCP helper inside a lab pod (Pod.Command runs it in the
// pod's cgroup and netns): "server ADDR" or "connect ADDR RATE SECONDS" (RATE 0: as fast as
// 16 connections at a time go). Checked in init, before TestMain starts a lab.
const tcpHelperEnv = "ISOOBS_BENCH_TCP"

func init() {
	role := strings.Fields(os.Getenv(tcpHelperEnv))
	if len(role) == 0 {
		return
	}
	if err := tcpHelper(role); err != nil {
		fmt.Fprintln(os.Stderr, "tcp helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// tcpConnReport is the connecting helper's own tally.
type tcpConnReport struct {
	Connects int64   `json:"connects"` // connections established
	Failed   int64   `json:"failed"`   // connects that failed
	Broken   int64   `json:"broken"`   // established, but the request and answer were not exchanged
	Seconds  float64 `json:"seconds"`
}

// tcpHelper: the server answers each connection's 100-byte request with 100 bytes and closes
// first (its side keeps the TIME_WAIT, so the client's ports are free again at once).
func tcpHelper(role []string) error {
	switch {
	case role[0] == "server" && len(role) == 2:
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
			go func() {
				defer c.Close()
				buf := make([]byte, 100)
				if _, err := io.ReadFull(c, buf); err == nil {
					c.Write(buf)
				}
			}()
		}
	case role[0] == "connect" && len(role) == 4:
		rate, err1 := strconv.ParseFloat(role[2], 64)
		secs, err2 := strconv.ParseFloat(role[3], 64)
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		// Every local port: at the highest rates the client goes through many.
		_ = os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("1024 65535"), 0o644)
		var r tcpConnReport
		one := func() {
			c, err := net.DialTimeout("tcp", role[1], 2*time.Second)
			if err != nil {
				atomic.AddInt64(&r.Failed, 1)
				return
			}
			atomic.AddInt64(&r.Connects, 1)
			defer c.Close()
			buf := make([]byte, 100)
			if _, err := c.Write(buf); err != nil {
				atomic.AddInt64(&r.Broken, 1)
				return
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				atomic.AddInt64(&r.Broken, 1)
			}
		}
		start := time.Now()
		end := start.Add(time.Duration(secs * float64(time.Second)))
		var wg sync.WaitGroup
		if rate > 0 {
			tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
			for now := range tick.C {
				if now.After(end) {
					break
				}
				wg.Add(1)
				go func() { defer wg.Done(); one() }()
			}
			tick.Stop()
		} else {
			for range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Now().Before(end) {
						one()
					}
				}()
			}
		}
		wg.Wait()
		r.Seconds = time.Since(start).Seconds()
		return json.NewEncoder(os.Stdout).Encode(r)
	}
	return fmt.Errorf("unknown role %q", role)
}

// tcpPodRow is a pod's row of a fresh TCP frame (counts since daemon start).
func tcpPodRow(ctx context.Context, b *testing.B, c isoobsv1.DaemonClient, p *podnet.Pod) *isoobsv1.TCPRow {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := c.Top(ctx, &isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_TCP, Namespace: p.Namespace, Pod: p.Name})
	if err != nil {
		b.Fatal(err)
	}
	f, err := s.Recv()
	if err != nil {
		b.Fatal(err)
	}
	for _, r := range f.TcpRows {
		if r.Pod == p.Name {
			return r
		}
	}
	return &isoobsv1.TCPRow{}
}

// BenchmarkDaemonTCPConnRate runs the isoobs-daemon binary for the lab node with every probe on
// (DNS, TCP with its peers, drops), a `top tcp` and a `top dns` viewer streaming, and loads it
// with new TCP connections from one lab pod to another at rising rates, 10 s per step: idle
// (right after start: the daemon's one-off start work shows here), 100/s, 1000/s, as fast as 16
// concurrent clients go (the machine's max), then idle again (idle-after: the steady state,
// only the viewers streaming, as in the first idle step). Per step: the
// daemon's CPU (% of one core, from its threads' schedstat) and RSS, and whether it counted
// exactly the connections the client made (its active opens, the server's passive opens, and
// the peer entry of each; exact = 1 when every step matched). Targets: <= 2 % of a core,
// <= 64 MiB, flat as the rate grows. The daemon runs with the chart's GOMEMLIMIT.
func BenchmarkDaemonTCPConnRate(b *testing.B) {
	w := getWorld(b)
	ctx := context.Background()
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	client, server := w.crawler, w.recruiter
	addr := netip.AddrPortFrom(server.IPv4, 8099).String()
	srv := server.Command(ctx, self)
	srv.Env = append(os.Environ(), tcpHelperEnv+"=server "+addr)
	srvOut, err := srv.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	if _, err := srvOut.Read(make([]byte, 16)); err != nil {
		b.Fatalf("the server did not start: %v", err)
	}
	for i := 0; i < b.N; i++ {
		// As the chart runs it: its GOMEMLIMIT is part of what the RSS target is about
		// (ISOOBS_BENCH_DAEMON_GOMEMLIMIT=none: without one).
		limit := chartGoMemLimit(b)
		if v := os.Getenv("ISOOBS_BENCH_DAEMON_GOMEMLIMIT"); v != "" {
			limit = v
		}
		d := startDaemonWith(b, w, daemonOptions{goMemLimit: limit})
		c := dialDaemon(b, d)
		viewCtx, stopView := context.WithCancel(ctx)
		for _, dim := range []isoobsv1.Dimension{isoobsv1.Dimension_DIMENSION_TCP, isoobsv1.Dimension_DIMENSION_DNS} {
			view, err := c.Top(viewCtx, &isoobsv1.TopRequest{Dimension: dim, TopNames: 5})
			if err != nil {
				b.Fatal(err)
			}
			go func() {
				for {
					if _, err := view.Recv(); err != nil {
						return
					}
				}
			}()
		}
		time.Sleep(3 * time.Second) // pod list synced, first frames out

		exact := true
		var inexact []string
		var maxRate float64
		step := func(name string, rate float64) {
			cBefore, sBefore := tcpPodRow(ctx, b, c, client), tcpPodRow(ctx, b, c, server)
			cpu0, t0 := d.cpuTime(b), time.Now()
			var rep tcpConnReport
			idle := rate < 0
			if idle {
				time.Sleep(10 * time.Second)
			} else {
				gen := client.Command(ctx, self)
				gen.Env = append(os.Environ(), fmt.Sprintf("%s=connect %s %g 10", tcpHelperEnv, addr, rate))
				gen.Stderr = os.Stderr
				out, err := gen.Output()
				if err != nil {
					b.Fatalf("client: %v", err)
				}
				if err := json.Unmarshal(out, &rep); err != nil {
					b.Fatalf("client tally %q: %v", out, err)
				}
			}
			cpu := d.cpuTime(b) - cpu0
			wall := time.Since(t0)
			rss, _ := d.memKiB(b)
			b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "cpu%core@"+name)
			b.ReportMetric(float64(rss)/1024, "rss-MiB@"+name)
			if idle {
				return
			}
			connRate := float64(rep.Connects) / rep.Seconds
			b.ReportMetric(connRate, "conn/s@"+name)
			maxRate = max(maxRate, connRate)
			// The daemon reads the kernel once a second: wait for it (at most 5 s).
			want := uint64(rep.Connects)
			var opens, accepted, peerOpens uint64
			for deadline := time.Now().Add(5 * time.Second); ; {
				cr, sr := tcpPodRow(ctx, b, c, client), tcpPodRow(ctx, b, c, server)
				opens, accepted = cr.ActiveOpens-cBefore.ActiveOpens, sr.PassiveOpens-sBefore.PassiveOpens
				peerOpens = 0
				for _, p := range cr.TopPeers {
					if p.Ip == server.IPv4.String() && p.Port == 8099 {
						peerOpens = p.Opens
					}
				}
				for _, p := range cBefore.TopPeers {
					if p.Ip == server.IPv4.String() && p.Port == 8099 {
						peerOpens -= p.Opens
					}
				}
				if (opens == want && accepted == want && peerOpens == want) || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if rep.Failed+rep.Broken > 0 {
				b.Logf("%s: %d connects failed, %d connections broke", name, rep.Failed, rep.Broken)
			}
			if opens != want || accepted != want || peerOpens != want {
				exact = false
				inexact = append(inexact, fmt.Sprintf("%s: client made %d connections (%d connects failed); daemon counted %d opens, %d accepted, %d to the peer",
					name, want, rep.Failed, opens, accepted, peerOpens))
			}
		}
		step("idle", -1) // rate < 0: no connections
		step("100", 100)
		step("1k", 1000)
		step("max", 0)
		step("idle-after", -1)
		_, hwm := d.memKiB(b)
		b.ReportMetric(float64(hwm)/1024, "peak-rss-MiB")
		b.ReportMetric(maxRate, "max-conn/s")
		reportExact(b, exact, strings.Join(inexact, "; "))
		stopView()
		d.stop()
	}
}
