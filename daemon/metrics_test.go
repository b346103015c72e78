package daemon

import (
	"fmt"
	"testing"
	"time"

	"github.com/isoobs/isoobs/daemon/podmeta"
)

// 50,000 bare pods (each its own workload) come and go, 500 a tick, each sending one query:
// the workload series stay under the limit, what did not fit is in the "other" series and
// counted, no query is lost from the sum, and once the pods are gone for the retention every
// series goes.
func TestMetricsSeriesBoundedUnderPodChurn(t *testing.T) {
	const pods, perTick = 50_000, 500
	cfg := &Config{Interval: time.Second, Retention: 5 * time.Minute}
	c := &collector{cfg: cfg, subjects: map[string]*subject{}, src: newFakeSource()}
	m := newMetrics()
	m.c = c
	sum := func() (total float64, series int) {
		mfs, err := m.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "isoobs_dns_queries_total" {
				for _, mt := range mf.GetMetric() {
					total += mt.GetCounter().GetValue()
					series++
				}
			}
		}
		return total, series
	}
	maxSeries := 0
	for start := 0; start < pods; start += perTick {
		c.tickNo++
		clear(c.subjects)
		for i := start; i < start+perTick; i++ {
			name := fmt.Sprintf("job-%05d", i)
			s := &subject{key: "uid-" + name, meta: &podmeta.Pod{Namespace: fmt.Sprintf("ns-%d", i%700), Name: name, Workload: name, WorkloadKind: "Pod"}}
			s.total.Queries = 1
			c.subjects[s.key] = s
		}
		m.observeTick(c)
		_, series := sum()
		maxSeries = max(maxSeries, series)
	}
	total, series := sum()
	if maxSeries > maxWorkloadSeries || series > maxWorkloadSeries {
		t.Fatalf("%d workload series at most, %d at the end: want <= %d", maxSeries, series, maxWorkloadSeries)
	}
	if total != pods {
		t.Errorf("queries summed over the series = %.0f, want %d (nothing lost to the limit)", total, pods)
	}
	if got := gathered(t, m, "isoobs_metrics_series_overflow_total"); got != pods-(maxWorkloadSeries-1) {
		t.Errorf("overflow counter %v, want %d (every pod past the limit)", got, pods-(maxWorkloadSeries-1))
	}
	var nsSeries int
	mfs, _ := m.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "isoobs_dns_latency_seconds" {
			nsSeries = len(mf.GetMetric())
		}
	}
	if nsSeries > maxNamespaceSeries {
		t.Errorf("%d namespace series, want <= %d", nsSeries, maxNamespaceSeries)
	}
	// The pods are gone: after the retention with nothing new, the series go.
	clear(c.subjects)
	for range int(cfg.Retention/cfg.Interval) + 2 {
		c.tickNo++
		m.observeTick(c)
	}
	if _, series := sum(); series != 0 {
		t.Errorf("%d workload series left %s after the pods went, want 0", series, cfg.Retention)
	}
}

// gathered returns the value of the unlabelled counter name from m's registry.
func gathered(t *testing.T, m *metrics, name string) float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}
