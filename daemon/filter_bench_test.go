package daemon

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/isoobs/isoobs/bpf"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// BenchmarkTickWithNameFilters: what open --name/--zone views cost the collector's tick, which
// matches every drained name against every filter (1,000 pods × 20 names a tick).
func BenchmarkTickWithNameFilters(b *testing.B) {
	const pods, names = 1000, 20
	for _, tc := range []struct {
		name    string
		streams int
		req     *isoobsv1.TopRequest
	}{
		{"none", 0, nil},
		{"zone-x1", 1, &isoobsv1.TopRequest{Zone: "tenant.svc.cluster.local"}},
		{"regex-x1", 1, &isoobsv1.TopRequest{NameRegex: `^svc-1[0-9]\.`}},
		{"regex-x8", 8, &isoobsv1.TopRequest{NameRegex: `^svc-1[0-9]\.`}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			f := newFixture(b, func(c *Config) { c.MaxTrackedPods = pods })
			for i := range pods {
				f.res.paths[uint64(10_000+i)] = systemdPod(fmt.Sprintf("%08d-0000-4000-8000-000000000000", i)) + "/cri-containerd-x.scope"
			}
			f.c.tick(f.now)
			for range tc.streams {
				q, err := newTopQuery(tc.req, f.cfg.Interval)
				if err != nil {
					b.Fatal(err)
				}
				f.c.startStream(q)
			}
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				for i := range pods {
					for n := range names {
						f.src.query(uint64(10_000+i), "svc-"+strconv.Itoa(n)+".tenant.svc.cluster.local", 1, bpf.RcodeNoError, time.Millisecond)
					}
				}
				b.StartTimer()
				f.step()
			}
		})
	}
}
