package bench

import (
	"context"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/isoobs/isoobs/deploy"
	"github.com/isoobs/isoobs/testlab/dnsgen"
)

// longSuffix makes the crawler's names 253 bytes, the longest a DNS name can be:
// <12 random>.<59 x a>.<59 x b>.<59 x c>.<46 x d>.crawl.example (12+1+60+60+60+47+13).
var longSuffix = strings.Repeat("a", 59) + "." + strings.Repeat("b", 59) + "." + strings.Repeat("c", 59) + "." + strings.Repeat("d", 46) + ".crawl.example"

// BenchmarkMemoryCeilingLongNames floods unique 253-byte names as fast as CoreDNS answers while
// 8 `top dns --duration` views are open (each keeps name summaries of its own), against the
// daemon with the chart's GOMEMLIMIT, and polls /healthz as the chart's liveness probe does.
// Metrics: peak-rss-MiB (fails above the chart's memory limit), healthz-failures (fails at
// the chart's failureThreshold in a row: the kubelet would restart the daemon), names (sent),
// flood-qps, name-bytes.
func BenchmarkMemoryCeilingLongNames(b *testing.B) {
	w := getWorld(b)
	vals, err := deploy.DefaultValues()
	if err != nil {
		b.Fatal(err)
	}
	goMemLimit := chartGoMemLimit(b)
	limitText := vals["resources"].(map[string]any)["limits"].(map[string]any)["memory"].(string)
	limit := resource.MustParse(limitText)
	liveness := vals["probes"].(map[string]any)["liveness"].(map[string]any)
	period := time.Duration(toInt(liveness["periodSeconds"])) * time.Second
	threshold := toInt(liveness["failureThreshold"])
	if got := len("abcdefghijkl." + longSuffix); got != 253 {
		b.Fatalf("names are %d bytes, want 253", got)
	}
	ctx := context.Background()
	dur := floodDuration(b)
	for i := 0; i < b.N; i++ {
		d := startDaemonWith(b, w, daemonOptions{metrics: true, goMemLimit: goMemLimit})
		viewCtx, stopViews := context.WithCancel(ctx)
		var views sync.WaitGroup
		for range 8 {
			views.Add(1)
			go func() {
				defer views.Done()
				cmd := exec.CommandContext(viewCtx, w.pluginBin, "top", "dns", "--daemon", d.addr, "-A", "-o", "json",
					"--group-by", "qname", "--duration", (dur + 10*time.Second).String())
				cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
				_ = cmd.Run()
			}()
		}
		healthFailures, worstRun, run, probes := 0, 0, 0, 0
		probeCtx, stopProbes := context.WithCancel(ctx)
		probed := make(chan struct{})
		go func() {
			defer close(probed)
			client := &http.Client{Timeout: time.Second} // the chart's probe timeout
			for {
				select {
				case <-probeCtx.Done():
					return
				case <-time.After(period):
				}
				probes++
				resp, err := client.Get("http://" + d.metrics + "/healthz")
				if err != nil || resp.StatusCode != http.StatusOK {
					healthFailures++
					run++
					worstRun = max(worstRun, run)
				} else {
					run = 0
				}
				if resp != nil {
					resp.Body.Close()
				}
			}
		}()
		rep, err := dnsgen.RunInPod(ctx, w.crawler, w.dnsgenBin, dnsgen.Config{Server: w.dns, RandomSuffix: longSuffix,
			Concurrency: 64, Duration: dur, Timeout: 2 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(3 * time.Second) // the last ticks drain the flood's names
		stopProbes()
		<-probed
		_, hwm := d.memKiB(b)
		stopViews()
		views.Wait()
		d.stop()

		peak := float64(hwm) / 1024
		b.ReportMetric(peak, "peak-rss-MiB")
		b.ReportMetric(float64(healthFailures), "healthz-failures")
		b.ReportMetric(float64(rep.Sent), "names")
		b.ReportMetric(rep.QPS, "flood-qps")
		b.ReportMetric(253, "name-bytes")
		b.Logf("GOMEMLIMIT %s, chart memory limit %s, %d health probes", goMemLimit, limitText, probes)
		if peak*(1<<20) > float64(limit.Value()) {
			b.Errorf("peak RSS %.1f MiB is over the chart's memory limit %s: the kernel would kill the daemon", peak, limitText)
		}
		if worstRun >= threshold {
			b.Errorf("%d /healthz probes failed in a row (%d of %d in all): the kubelet restarts the daemon after %d", worstRun, healthFailures, probes, threshold)
		}
	}
}

// toInt reads a number from Helm values (YAML numbers arrive as float64 or int64).
func toInt(v any) int {
	switch n := v.(type) {
	case int:
		return n
	case int64:
		return int(n)
	case float64:
		return int(n)
	}
	return 0
}
