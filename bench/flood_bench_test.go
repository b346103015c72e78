package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isoobs/isoobs/testlab/dnsgen"
)

// pluginFrame is the part of `kubectl isoobs top dns -o json` the benchmark reads.
type pluginFrame struct {
	Rows []struct {
		Namespace string  `json:"namespace"`
		Pod       string  `json:"pod"`
		QPS       float64 `json:"qps"`
		TopZones  []struct {
			Name    string `json:"name"`
			Queries uint64 `json:"queries"`
		} `json:"topZones"`
	} `json:"rows"`
}

// floodDuration is ISOOBS_BENCH_FLOOD (default 60s).
func floodDuration(b *testing.B) time.Duration {
	if v := os.Getenv("ISOOBS_BENCH_FLOOD"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("ISOOBS_BENCH_FLOOD=%q: %v (want a duration such as 5m)", v, err)
		}
		return d
	}
	return 60 * time.Second
}

// BenchmarkRealFloodCulprit plays the seed 000 incident on the real kernel:
// recruiter (500 q/s) and loadgen (300 q/s) send normal queries, then the
// crawler floods CoreDNS with random subdomains of crawl.example (every name
// unique, as fast as 64 sockets go) for ISOOBS_BENCH_FLOOD. The real plugin
// (`kubectl isoobs top dns --daemon ADDR -o json`, default 1 s interval)
// reads the isoobs-daemon process. Metrics:
//   - culprit-s: flood start to the first plugin frame ranking the crawler
//     first (target <= 2 s);
//   - unique-names, flood-qps: what the crawler sent;
//   - exact: 1 when the daemon's crawler queries equal dnsgen's sent and its
//     responses equal the answers the crawler's sockets received (0 fails
//     the benchmark);
//   - zone-err%: |crawl.example count - sent| / sent (target <= 1 %);
//   - peak-rss-MiB, cpu%core@flood of the daemon (targets 64 MiB, 2 %).
func BenchmarkRealFloodCulprit(b *testing.B) {
	w := getWorld(b)
	ctx := context.Background()
	dur := floodDuration(b)
	for i := 0; i < b.N; i++ {
		d := startDaemon(b, w)
		c := dialDaemon(b, d)
		bgCtx, stopBg := context.WithCancel(ctx)
		var bg sync.WaitGroup
		for _, pl := range []struct {
			rate float64
			i    int
		}{{500, 0}, {300, 1}} {
			pod := w.recruiter
			if pl.i == 1 {
				pod = w.loadgen
			}
			bg.Add(1)
			go func() {
				defer bg.Done()
				_, _ = dnsgen.RunInPod(bgCtx, pod, w.dnsgenBin, dnsgen.Config{Server: w.dns, Names: dnsgenNames,
					QPS: pl.rate, Concurrency: 4, Duration: dur + 30*time.Second, Timeout: 2 * time.Second})
			}()
		}
		time.Sleep(3 * time.Second)

		// The real plugin, as an on-call engineer runs it.
		plugCtx, stopPlug := context.WithCancel(ctx)
		plug := exec.CommandContext(plugCtx, w.pluginBin, "top", "dns", "--daemon", d.addr, "-A", "-o", "json", "--top-names", "3", "--limit", "5")
		out, err := plug.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		plug.Stderr = os.Stderr
		if err := plug.Start(); err != nil {
			b.Fatal(err)
		}
		frames := make(chan pluginFrame, 1024)
		go func() {
			defer close(frames)
			sc := bufio.NewScanner(out)
			sc.Buffer(make([]byte, 1<<20), 16<<20)
			for sc.Scan() {
				var f pluginFrame
				if json.Unmarshal(sc.Bytes(), &f) == nil {
					frames <- f
				}
			}
		}()
		// Before the flood the crawler is quiet: wait for a frame led by another pod.
		for f := range frames {
			if len(f.Rows) > 0 && f.Rows[0].Pod != w.crawler.Name {
				break
			}
		}

		before := countsOf(podRow(ctx, b, c, w.crawler))
		cpu0 := d.cpuTime(b)
		t0 := time.Now()
		type result struct {
			rep *dnsgen.Report
			err error
		}
		floodDone := make(chan result, 1)
		go func() {
			rep, err := dnsgen.RunInPod(ctx, w.crawler, w.dnsgenBin, dnsgen.Config{Server: w.dns, RandomSuffix: "crawl.example",
				Concurrency: 64, Duration: dur, Timeout: 2 * time.Second})
			floodDone <- result{rep, err}
		}()
		culprit := -1.0
		for f := range frames {
			if len(f.Rows) > 0 && f.Rows[0].Pod == w.crawler.Name {
				culprit = time.Since(t0).Seconds()
				break
			}
			if time.Since(t0) > 30*time.Second {
				break
			}
		}
		go func() { // keep the plugin's pipe drained
			for range frames {
			}
		}()
		res := <-floodDone
		if res.err != nil {
			b.Fatal(res.err)
		}
		cpu := d.cpuTime(b) - cpu0
		floodWall := time.Since(t0)
		rep := res.rep
		want := rowCounts{queries: rep.Sent, responses: rep.Answered + rep.Discarded, noerror: rep.RCodes.NoError,
			nxdomain: rep.RCodes.NXDomain, servfail: rep.RCodes.ServFail, refused: rep.RCodes.Refused}
		// Late answers (Discarded) carry their rcode too; compare only what the client can tell.
		got := waitCounts(ctx, b, c, w.crawler, before, want)
		exact := got.queries == want.queries && got.responses == want.responses
		row := podRow(ctx, b, c, w.crawler)
		var zone uint64
		for _, z := range row.TopZones {
			if strings.TrimSuffix(z.Name, ".") == "*.crawl.example" || strings.TrimSuffix(z.Name, ".") == "crawl.example" {
				zone = z.Queries
			}
		}
		zoneErr := 100 * absDiff(zone, rep.Sent) / float64(rep.Sent)
		_, hwm := d.memKiB(b)
		stopPlug()
		plug.Wait()
		stopBg()
		bg.Wait()
		d.stop()

		b.ReportMetric(culprit, "culprit-s")
		b.ReportMetric(float64(rep.Sent), "unique-names")
		b.ReportMetric(rep.QPS, "flood-qps")
		reportExact(b, exact, fmt.Sprintf("crawler row %d queries %d responses, dnsgen sent %d and got %d answers", got.queries, got.responses, want.queries, want.responses))
		b.ReportMetric(zoneErr, "zone-err%")
		b.ReportMetric(float64(hwm)/1024, "peak-rss-MiB")
		b.ReportMetric(100*cpu.Seconds()/floodWall.Seconds(), "cpu%core@flood")
		if zone == 0 {
			b.Logf("crawler row has no crawl.example zone: %v", row.TopZones)
		}
		b.Logf("flood: sent %d answered %d timeouts %d discarded %d; daemon queries %d responses %d", rep.Sent, rep.Answered, rep.Timeouts, rep.Discarded, got.queries, got.responses)
	}
}

func absDiff(a, b uint64) float64 {
	if a > b {
		return float64(a - b)
	}
	return float64(b - a)
}
