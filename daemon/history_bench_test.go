package daemon

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/isoobs/isoobs/bpf"
	"github.com/isoobs/isoobs/daemon/window"
)

// BenchmarkHistoryMemoryPerPod measures what a pod's history costs: a collector tracking 1,000
// pods, each querying every tick, ticked until every ring has wrapped, with the daemon's
// retention and interval. B/pod-heap is live heap after GC per pod (the whole per-pod state:
// counters, names, history); B/pod-rss is the process's resident-set growth per pod;
// B/pod-series is the history ring alone. Both are read after debug.FreeOSMemory, so garbage
// and the GC's headroom are not counted. "flat-15m" keeps every tick for 15 minutes (what
// raising the retention would have cost without the coarse tier).
func BenchmarkHistoryMemoryPerPod(b *testing.B) {
	const pods = 1000
	for _, tc := range []struct {
		name      string
		retention time.Duration
		layout    *window.Layout // nil: the daemon's (window.LayoutFor)
	}{
		{"flat-5m", 5 * time.Minute, &window.Layout{Fine: 301}}, // before: every tick for 5 minutes
		{"tiered-5m", 5 * time.Minute, nil},
		{"tiered-15m", 15 * time.Minute, nil}, // the default now
		{"flat-15m", 15 * time.Minute, &window.Layout{Fine: 901}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var heap, rss, series float64
			for range b.N {
				debug.FreeOSMemory() // garbage of earlier runs goes back to the kernel first
				h0, r0 := liveHeap(), residentBytes()
				f := newFixture(b, func(c *Config) { c.Retention = tc.retention; c.MaxTrackedPods = pods })
				if tc.layout != nil {
					f.c.clock = window.NewTieredClock(*tc.layout)
				}
				l := f.c.clock.Layout()
				for i := range pods {
					id := uint64(10_000 + i)
					f.res.paths[id] = systemdPod(fmt.Sprintf("%08d-0000-4000-8000-000000000000", i)) + "/cri-containerd-x.scope"
				}
				f.c.tick(f.now)
				ticks := l.Fine + l.Step*l.Coarse + 1
				for t := range ticks {
					for i := range pods {
						f.src.query(uint64(10_000+i), "svc-"+strconv.Itoa(i%20)+".tenant.svc.cluster.local", 1, bpf.RcodeNoError, time.Millisecond)
					}
					f.step()
					_ = t
				}
				if len(f.c.subjects) != pods {
					b.Fatalf("%d subjects, want %d", len(f.c.subjects), pods)
				}
				debug.FreeOSMemory() // what stays resident is what the pods hold
				heap += float64(liveHeap()-h0) / pods
				rss += float64(residentBytes()-r0) / pods
				series += float64(l.Samples()) * float64(len(rateSample{})*8)
				runtime.KeepAlive(f)
			}
			b.ReportMetric(heap/float64(b.N), "B/pod-heap")
			b.ReportMetric(rss/float64(b.N), "B/pod-rss")
			b.ReportMetric(series/float64(b.N), "B/pod-series")
		})
	}
}

func liveHeap() int64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

func residentBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}
