package bench

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/testlab/dnsgen"
	"github.com/isoobs/isoobs/testlab/podnet"
)

// dnsgenNames is the client mix of the daemon benchmarks: NOERROR (cluster
// and noerror.test names), NXDOMAIN and SERVFAIL answers.
var dnsgenNames = []string{
	"kubernetes.default.svc.cluster.local",
	"web.noerror.test",
	"nope.tenant-jobs.svc.cluster.local",
	"x.servfail.test",
}

func dialDaemon(b *testing.B, d *daemonProc) isoobsv1.DaemonClient {
	conn, err := grpc.NewClient(d.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return isoobsv1.NewDaemonClient(conn)
}

// podRow is one pod's row of a fresh Top frame (counts since daemon start).
func podRow(ctx context.Context, b *testing.B, c isoobsv1.DaemonClient, p *podnet.Pod) *isoobsv1.DNSRow {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := c.Top(ctx, &isoobsv1.TopRequest{Namespace: p.Namespace, Pod: p.Name, TopNames: 5})
	if err != nil {
		b.Fatal(err)
	}
	f, err := s.Recv()
	if err != nil {
		b.Fatal(err)
	}
	for _, r := range f.Rows {
		if r.Pod == p.Name {
			return r
		}
	}
	return &isoobsv1.DNSRow{}
}

// onlyRefusedCopiesShort: got differs from want (which expects every
// REFUSED answer twice) only by second copies that arrived after dnsperf
// closed its sockets (see refusedCopies).
func onlyRefusedCopiesShort(got, want rowCounts) bool {
	refused := want.refused / 2
	copies, ok := refusedCopies(got.refused, refused, dnsperfClients)
	short := refused - copies
	want.refused -= short
	want.responses -= short
	return ok && got == want
}

// rowCounts are the row fields compared with a generator's ground truth.
type rowCounts struct{ queries, responses, noerror, nxdomain, servfail, refused uint64 }

// countsOf adds a row's unsolicited answers back as REFUSED responses: in
// the lab the only ones are CoreDNS's second REFUSED copies (see
// refusedCopies), which the probe counts as REFUSED where it cannot check
// them (a busy pod's answers are checked 1 in 2^k) and as unsolicited where
// it can; their sum is what reached the pod.
func countsOf(r *isoobsv1.DNSRow) rowCounts {
	return rowCounts{r.Queries, r.Responses + r.Unsolicited, r.Noerror, r.Nxdomain, r.Servfail, r.Refused + r.Unsolicited}
}

func (a rowCounts) sub(o rowCounts) rowCounts {
	return rowCounts{a.queries - o.queries, a.responses - o.responses, a.noerror - o.noerror,
		a.nxdomain - o.nxdomain, a.servfail - o.servfail, a.refused - o.refused}
}

// waitCounts polls the daemon until the pod's counts since before reach want
// (the daemon reads the kernel once per interval) or 5 s pass, and returns them.
func waitCounts(ctx context.Context, b *testing.B, c isoobsv1.DaemonClient, p *podnet.Pod, before, want rowCounts) rowCounts {
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := countsOf(podRow(ctx, b, c, p)).sub(before)
		if got == want || time.Now().After(deadline) {
			if got != want {
				b.Logf("%s: daemon counted %+v, ground truth %+v", p.Name, got, want)
			}
			return got
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// BenchmarkDaemonCPUAndRSS runs the isoobs-daemon binary for the lab node (as
// on a node: kernel probe, Kubernetes watch, gRPC, one Top stream open like a
// `top dns` viewer) and loads it with DNS traffic at rising rates, 10 s per
// step: idle, dnsgen at 1k and 10k queries/s, then dnsperf as fast as CoreDNS
// answers. Per step it reports the daemon's CPU (user+system from
// /proc/<pid>/stat, % of one core) and RSS, and checks that the daemon's
// per-pod counts equal the generator's exactly (exact = 1 when every step
// matched; 0 fails the benchmark). Targets: <= 2 % of a core and <= 64 MiB, flat as the rate grows.
func BenchmarkDaemonCPUAndRSS(b *testing.B) {
	w := getWorld(b)
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		d := startDaemon(b, w)
		c := dialDaemon(b, d)
		// A viewer: one Top stream read for the whole run.
		viewCtx, stopView := context.WithCancel(ctx)
		view, err := c.Top(viewCtx, &isoobsv1.TopRequest{TopNames: 5})
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
		time.Sleep(3 * time.Second) // pod list synced, first frames out

		exact := true
		var inexact []string
		var maxQPS float64
		step := func(name string, load func() (sent float64, want rowCounts)) {
			before := countsOf(podRow(ctx, b, c, w.loadgen))
			cpu0, t0 := d.cpuTime(b), time.Now()
			qps, want := load()
			cpu := d.cpuTime(b) - cpu0
			wall := time.Since(t0)
			rss, _ := d.memKiB(b)
			b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "cpu%core@"+name)
			b.ReportMetric(float64(rss)/1024, "rss-MiB@"+name)
			if name != "idle" {
				if got := waitCounts(ctx, b, c, w.loadgen, before, want); got != want && !onlyRefusedCopiesShort(got, want) {
					exact = false
					inexact = append(inexact, fmt.Sprintf("%s: daemon %+v, generator %+v", name, got, want))
				}
			}
			maxQPS = max(maxQPS, qps)
		}
		step("idle", func() (float64, rowCounts) { time.Sleep(10 * time.Second); return 0, rowCounts{} })
		for _, rate := range []float64{1000, 10000} {
			step(fmt.Sprintf("%.0fk", rate/1000), func() (float64, rowCounts) {
				rep, err := dnsgen.RunInPod(ctx, w.loadgen, w.dnsgenBin, dnsgen.Config{Server: w.dns, Names: dnsgenNames,
					QPS: rate, Concurrency: 32, Duration: 10 * time.Second, Timeout: 2 * time.Second})
				if err != nil {
					b.Fatal(err)
				}
				return rep.QPS, rowCounts{rep.Sent, rep.Answered, rep.RCodes.NoError, rep.RCodes.NXDomain, rep.RCodes.ServFail, rep.RCodes.Refused}
			})
		}
		step("max", func() (float64, rowCounts) {
			res, err := dnsgen.RunDNSPerf(ctx, w.loadgen, dnsgen.DNSPerfOptions{Server: w.dns, Queries: dnsgen.LabQueryMix, Runs: 1 << 30,
				Duration: 10 * time.Second, Clients: dnsperfClients, Outstanding: 100, Timeout: 2 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			if res.Lost != 0 {
				b.Logf("dnsperf lost %d queries: responses not comparable", res.Lost)
			}
			// CoreDNS sends each REFUSED answer twice (see refusedCopies).
			return res.QPS, rowCounts{res.Sent, res.Completed + res.RCodes["REFUSED"], res.RCodes["NOERROR"],
				res.RCodes["NXDOMAIN"], res.RCodes["SERVFAIL"], 2 * res.RCodes["REFUSED"]}
		})
		_, hwm := d.memKiB(b)
		b.ReportMetric(float64(hwm)/1024, "peak-rss-MiB")
		b.ReportMetric(maxQPS, "max-qps")
		reportExact(b, exact, strings.Join(inexact, "; "))
		stopView()
		d.stop()
	}
}
