package daemon

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/isoobs/isoobs/bpf"
)

// tcpMetrics exports the TCP probe's counters per namespace/workload only (never per pod UID:
// pod churn must not become series churn), with the DNS metrics' bounds: a series idle for
// the retention goes, and past maxWorkloadSeries new workloads add into the "other" series.
type tcpMetrics struct {
	c *tcpCollector

	mu         sync.Mutex
	byWorkload map[workloadKey]*tcpWorkloadAccum
	overflow   uint64

	opensDesc, failuresDesc, resetsDesc, retransDesc, bytesDesc, overflowDesc, mapFullDesc *prometheus.Desc
	dropsDesc                                                                              *prometheus.Desc
}

type tcpWorkloadAccum struct {
	c        bpf.TCPCounters
	drops    map[uint32]uint64 // packets by kernel drop reason
	lastTick uint64
}

func newTCPMetrics(c *tcpCollector) *tcpMetrics {
	wl := []string{"namespace", "workload"}
	return &tcpMetrics{
		c:          c,
		byWorkload: map[workloadKey]*tcpWorkloadAccum{},
		opensDesc: prometheus.NewDesc("isoobs_tcp_connections_opened_total",
			"TCP connections opened by pods (direction=active: connect; passive: accepted), per namespace and workload.", append(wl, "direction"), nil),
		failuresDesc: prometheus.NewDesc("isoobs_tcp_connect_failures_total",
			"TCP connects of pods that failed, by reason (refused: answered by a RST; timeout: no answer to the SYNs; other), per namespace and workload.", append(wl, "reason"), nil),
		resetsDesc: prometheus.NewDesc("isoobs_tcp_resets_total",
			"TCP RSTs sent and received by pods' sockets (a RST answering a SYN is a refused connect instead), per namespace and workload.", append(wl, "direction"), nil),
		retransDesc: prometheus.NewDesc("isoobs_tcp_retransmitted_segments_total",
			"TCP segments pods retransmitted (SYN-ACKs included, as the kernel's TcpRetransSegs), per namespace and workload.", wl, nil),
		bytesDesc: prometheus.NewDesc("isoobs_tcp_bytes_total",
			"New TCP payload bytes pods sent (direction=out) and received (in), each byte once, per namespace and workload.", append(wl, "direction"), nil),
		overflowDesc: prometheus.NewDesc("isoobs_tcp_metrics_series_overflow_total",
			"Pod counts added into the workload=\"other\" TCP series because the series limit was reached.", nil, nil),
		dropsDesc: prometheus.NewDesc("isoobs_drops_total",
			"Packets of pods' sockets the kernel dropped, by the kernel's drop reason (NETFILTER_DROP, NO_SOCKET, ...), per namespace and workload.", append(wl, "reason"), nil),
		mapFullDesc: prometheus.NewDesc("isoobs_tcp_probe_map_full_total",
			"TCP events the probe did not count because its per-cgroup map was full.", nil, nil),
	}
}

// observe adds one subject's delta of a tick. Called by the collector under its lock.
func (m *tcpMetrics) observe(s *tcpSubject, d *bpf.TCPCounters, tick uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tcpAdd(&m.accum(s, tick).c, d)
}

// observeDrops adds one subject's new drops of one reason.
func (m *tcpMetrics) observeDrops(s *tcpSubject, reason uint32, packets, tick uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.accum(s, tick)
	if w.drops == nil {
		w.drops = map[uint32]uint64{}
	}
	w.drops[reason] += packets
}

// accum is the series of s's namespace and workload (or "other" past the limit). Callers hold mu.
func (m *tcpMetrics) accum(s *tcpSubject, tick uint64) *tcpWorkloadAccum {
	ns, wl := unknownLabel, unknownLabel
	if s.meta != nil {
		ns, wl = s.meta.Namespace, s.meta.Workload
	}
	k := workloadKey{ns, wl}
	w := m.byWorkload[k]
	if w == nil {
		if len(m.byWorkload) >= maxWorkloadSeries-1 {
			k = workloadKey{otherLabel, otherLabel}
			w = m.byWorkload[k]
			m.overflow++
		}
		if w == nil {
			w = &tcpWorkloadAccum{}
			m.byWorkload[k] = w
		}
	}
	w.lastTick = tick
	return w
}

// expire drops series that counted nothing for keep ticks.
func (m *tcpMetrics) expire(tick, keep uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, w := range m.byWorkload {
		if tick > keep && tick-w.lastTick > keep {
			delete(m.byWorkload, k)
		}
	}
}

func (m *tcpMetrics) Describe(chan<- *prometheus.Desc) {}

func (m *tcpMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	for k, w := range m.byWorkload {
		c := &w.c
		counter := func(d *prometheus.Desc, v uint64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{k.namespace, k.workload}, extra...)...)
		}
		counter(m.opensDesc, c.ActiveOpens, "active")
		counter(m.opensDesc, c.PassiveOpens, "passive")
		counter(m.failuresDesc, c.ConnectRefused, "refused")
		counter(m.failuresDesc, c.ConnectTimeout, "timeout")
		counter(m.failuresDesc, c.ConnectOther, "other")
		counter(m.resetsDesc, c.ResetsSent, "sent")
		counter(m.resetsDesc, c.ResetsReceived, "received")
		counter(m.retransDesc, c.RetransSegs)
		counter(m.bytesDesc, c.BytesOut, "out")
		counter(m.bytesDesc, c.BytesIn, "in")
		for reason, n := range w.drops {
			counter(m.dropsDesc, n, bpf.DropReasonName(reason))
		}
	}
	ch <- prometheus.MustNewConstMetric(m.overflowDesc, prometheus.CounterValue, float64(m.overflow))
	m.mu.Unlock()
	m.c.mu.RLock()
	full := m.c.stats.CgroupOverflow
	m.c.mu.RUnlock()
	ch <- prometheus.MustNewConstMetric(m.mapFullDesc, prometheus.CounterValue, float64(full))
}
