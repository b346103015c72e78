package daemon

import (
	"math"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/isoobs/isoobs/bpf"
)

// Label value for pods whose namespace/workload is not known (no Kubernetes metadata yet).
const unknownLabel = "unknown"

var rcodeLabels = [bpf.NumRcodeSlots]string{"NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "OTHER"}

type workloadKey struct{ namespace, workload string }

type workloadAccum struct {
	queries, malformed    uint64
	timeouts, unsolicited uint64
	rcode                 [bpf.NumRcodeSlots]uint64
	served                [bpf.NumRcodeSlots]uint64 // responses sent by its DNS server pods
	lastTick              uint64                    // the last tick that added to it
}

type namespaceAccum struct {
	buckets  [bpf.NumLatencyBuckets]uint64
	lastTick uint64
}

// Series bounds. Bare pods are their own workload, so pod churn (a CronJob's pods, a crash
// loop) makes new workload series: a series that counted nothing for the daemon's retention is
// dropped, and past these limits new workloads and namespaces add into one series labelled
// otherLabel, counted by isoobs_metrics_series_overflow_total.
const (
	maxWorkloadSeries  = 2000
	maxNamespaceSeries = 500
	otherLabel         = "other"
)

// metrics exports DNS counters per namespace/workload (never per pod or name: a flood of
// names or churn of pods must not become a flood of series) and the daemon's own health.
type metrics struct {
	reg          *prometheus.Registry
	readDuration prometheus.Histogram
	c            *collector // set after the collector exists; read at scrape time

	mu         sync.Mutex
	byWorkload map[workloadKey]*workloadAccum
	byNS       map[string]*namespaceAccum
	exported   map[*subject]*counters
	// overflow counts the pod counts added into the "other" series (see maxWorkloadSeries).
	overflow uint64

	queriesDesc, responsesDesc, malformedDesc, latencyDesc                          *prometheus.Desc
	mapEntriesDesc, mapMaxDesc, nameOverflowDesc, lostDesc                          *prometheus.Desc
	probesAttachedDesc, podsTrackedDesc, hostQueriesDesc, ticksDesc, topStreamsDesc *prometheus.Desc
	latencySampledDesc, seriesOverflowDesc, timeoutsDesc, unsolicitedDesc           *prometheus.Desc
	servedDesc                                                                      *prometheus.Desc
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		readDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "isoobs_collector_read_duration_seconds", Help: "Time to read the probe maps and update per-pod state, per tick.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		byWorkload: map[workloadKey]*workloadAccum{},
		byNS:       map[string]*namespaceAccum{},
		exported:   map[*subject]*counters{},

		queriesDesc:        prometheus.NewDesc("isoobs_dns_queries_total", "DNS queries sent by pods, per namespace and workload.", []string{"namespace", "workload"}, nil),
		responsesDesc:      prometheus.NewDesc("isoobs_dns_responses_total", "DNS responses received by pods, per namespace, workload and rcode.", []string{"namespace", "workload", "rcode"}, nil),
		malformedDesc:      prometheus.NewDesc("isoobs_dns_malformed_total", "Port-53 payloads of pods that are not valid DNS, per namespace and workload.", []string{"namespace", "workload"}, nil),
		timeoutsDesc:       prometheus.NewDesc("isoobs_dns_timeouts_total", "DNS queries of pods without an answer within --dns-timeout, per namespace and workload (a busy pod's are estimated 1 in 2^k: see --latency-sample-above).", []string{"namespace", "workload"}, nil),
		unsolicitedDesc:    prometheus.NewDesc("isoobs_dns_unsolicited_responses_total", "DNS answers received by pods that matched no query they had pending (forged, or a server's duplicate answer), per namespace and workload; not in isoobs_dns_responses_total.", []string{"namespace", "workload"}, nil),
		servedDesc:         prometheus.NewDesc("isoobs_dns_served_responses_total", "DNS responses sent by DNS server pods (CoreDNS), per namespace, workload and rcode; only for workloads that served.", []string{"namespace", "workload", "rcode"}, nil),
		latencyDesc:        prometheus.NewDesc("isoobs_dns_latency_seconds", "DNS query to response time seen at the pod's cgroup, per namespace (a busy pod's queries are timed 1 in 2^k, each weighing 2^k: see --latency-sample-above).", []string{"namespace"}, nil),
		latencySampledDesc: prometheus.NewDesc("isoobs_dns_latency_sampled_pods", "Pods whose DNS latency is sampled now: they send more queries a second than --latency-sample-above.", nil, nil),
		mapEntriesDesc:     prometheus.NewDesc("isoobs_map_entries", "Entries in a bounded probe map.", []string{"map"}, nil),
		mapMaxDesc:         prometheus.NewDesc("isoobs_map_max_entries", "Capacity of a bounded probe map.", []string{"map"}, nil),
		nameOverflowDesc:   prometheus.NewDesc("isoobs_dns_name_overflow_total", "Query-name increments not counted because the kernel name table was full.", nil, nil),
		lostDesc:           prometheus.NewDesc("isoobs_lost_total", "Events not counted or not attributed, by reason.", []string{"reason"}, nil),
		probesAttachedDesc: prometheus.NewDesc("isoobs_probes_attached", "eBPF programs attached.", nil, nil),
		podsTrackedDesc:    prometheus.NewDesc("isoobs_pods_tracked", "Pods (and unresolved cgroups) with per-second history.", nil, nil),
		hostQueriesDesc:    prometheus.NewDesc("isoobs_dns_host_queries_total", "DNS queries from cgroups that are not pods (host processes).", nil, nil),
		ticksDesc:          prometheus.NewDesc("isoobs_collector_ticks_total", "Collector ticks since start.", nil, nil),
		topStreamsDesc:     prometheus.NewDesc("isoobs_top_streams", "Top streams open now (views reading this node).", nil, nil),
		seriesOverflowDesc: prometheus.NewDesc("isoobs_metrics_series_overflow_total", "Pod counts added into the namespace/workload=\"other\" series because the series limit (2000 workloads, 500 namespaces) was reached.", nil, nil),
	}
	m.reg.MustRegister(m.readDuration, m)
	return m
}

// observeTick exports what each subject counted since the last tick. Called under c.mu.
func (m *metrics) observeTick(c *collector) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range c.subjects {
		if s.hub != nil {
			continue // Hubble's counts are Hubble's own metrics; these are the probe's
		}
		prev := m.exported[s]
		if prev == nil {
			prev = &counters{}
			m.exported[s] = prev
		}
		d := s.total
		d.sub(prev)
		*prev = s.total
		if d.Queries == 0 && d.Responses == 0 && d.Malformed == 0 && d.Timeouts == 0 && d.Unsolicited == 0 && d.ServerResponses == 0 {
			continue
		}
		ns, wl := unknownLabel, unknownLabel
		if s.meta != nil {
			ns, wl = s.meta.Namespace, s.meta.Workload
		}
		n := m.byNS[ns]
		if n == nil {
			if len(m.byNS) >= maxNamespaceSeries-1 { // one place is the "other" series'
				ns, n = otherLabel, m.byNS[otherLabel]
			}
			if n == nil {
				n = &namespaceAccum{}
				m.byNS[ns] = n
			}
		}
		n.lastTick = c.tickNo
		for i := range n.buckets {
			n.buckets[i] += d.LatencyLog2US[i]
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
				w = &workloadAccum{}
				m.byWorkload[k] = w
			}
		}
		w.lastTick = c.tickNo
		w.queries += d.Queries
		w.malformed += d.Malformed
		w.timeouts += d.Timeouts
		w.unsolicited += d.Unsolicited
		for i := range w.rcode {
			w.rcode[i] += d.Rcode[i]
			w.served[i] += d.ServedRcode[i]
		}
	}
	// Series that counted nothing for the retention go: a workload or namespace that is gone
	// stops costing Prometheus a series (rate() over it was 0 anyway).
	if keep := uint64(c.cfg.Retention / c.cfg.Interval); c.tickNo > keep {
		for k, w := range m.byWorkload {
			if c.tickNo-w.lastTick > keep {
				delete(m.byWorkload, k)
			}
		}
		for ns, n := range m.byNS {
			if c.tickNo-n.lastTick > keep {
				delete(m.byNS, ns)
			}
		}
	}
	// Subjects forgotten by the collector leave the export map too.
	if len(m.exported) > len(c.subjects) {
		for s := range m.exported {
			if c.subjects[s.key] != s {
				delete(m.exported, s)
			}
		}
	}
}

// Describe sends nothing: the DNS series are dynamic ("unchecked" collector).
func (m *metrics) Describe(chan<- *prometheus.Desc) {}

// Collect emits the accumulated DNS counters and the daemon's health at scrape time.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	for k, w := range m.byWorkload {
		ch <- prometheus.MustNewConstMetric(m.queriesDesc, prometheus.CounterValue, float64(w.queries), k.namespace, k.workload)
		ch <- prometheus.MustNewConstMetric(m.malformedDesc, prometheus.CounterValue, float64(w.malformed), k.namespace, k.workload)
		ch <- prometheus.MustNewConstMetric(m.timeoutsDesc, prometheus.CounterValue, float64(w.timeouts), k.namespace, k.workload)
		ch <- prometheus.MustNewConstMetric(m.unsolicitedDesc, prometheus.CounterValue, float64(w.unsolicited), k.namespace, k.workload)
		for i, n := range w.rcode {
			ch <- prometheus.MustNewConstMetric(m.responsesDesc, prometheus.CounterValue, float64(n), k.namespace, k.workload, rcodeLabels[i])
		}
		if w.served != ([bpf.NumRcodeSlots]uint64{}) {
			for i, n := range w.served {
				ch <- prometheus.MustNewConstMetric(m.servedDesc, prometheus.CounterValue, float64(n), k.namespace, k.workload, rcodeLabels[i])
			}
		}
	}
	for ns, n := range m.byNS {
		// Bucket i holds [2^i, 2^(i+1)) µs, so its upper bound is 2^(i+1) µs; the sum is
		// estimated from bucket midpoints (the kernel keeps no exact sum).
		buckets := make(map[float64]uint64, len(n.buckets))
		var count uint64
		var sum float64
		for i, v := range n.buckets {
			count += v
			upper := math.Ldexp(1, i+1) / 1e6
			buckets[upper] = count
			sum += float64(v) * upper * 0.75
		}
		ch <- prometheus.MustNewConstHistogram(m.latencyDesc, count, sum, buckets, ns)
	}
	m.mu.Unlock()

	c := m.c
	if c == nil {
		return
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	st := c.stats
	for _, mf := range st.Maps() {
		ch <- prometheus.MustNewConstMetric(m.mapEntriesDesc, prometheus.GaugeValue, float64(mf.Entries), mf.Name)
		ch <- prometheus.MustNewConstMetric(m.mapMaxDesc, prometheus.GaugeValue, float64(mf.Max), mf.Name)
	}
	ch <- prometheus.MustNewConstMetric(m.nameOverflowDesc, prometheus.CounterValue, float64(st.NameOverflow))
	for reason, v := range map[string]uint64{
		"pod_map_full":       st.PodOverflow,
		"name_table_full":    st.NameOverflow,
		"inflight_evicted":   st.InflightEvicted,
		"inflight_errors":    st.InflightErrors,
		"not_parsed":         st.NotParsed,
		"pods_over_limit":    c.untrackedQueries,
		"unresolved_cgroups": c.unresolvedCgroups,
		"names_untracked":    c.droppedNameQueries,
		"read_errors":        c.readErrors,
	} {
		ch <- prometheus.MustNewConstMetric(m.lostDesc, prometheus.CounterValue, float64(v), reason)
	}
	attached := 0
	for _, a := range c.src.Attachments() {
		if a.Err == nil {
			attached++
		}
	}
	ch <- prometheus.MustNewConstMetric(m.probesAttachedDesc, prometheus.GaugeValue, float64(attached))
	ch <- prometheus.MustNewConstMetric(m.podsTrackedDesc, prometheus.GaugeValue, float64(len(c.subjects)))
	ch <- prometheus.MustNewConstMetric(m.latencySampledDesc, prometheus.GaugeValue, float64(st.LatencySampledPods))
	ch <- prometheus.MustNewConstMetric(m.hostQueriesDesc, prometheus.CounterValue, float64(c.hostQueries))
	ch <- prometheus.MustNewConstMetric(m.ticksDesc, prometheus.CounterValue, float64(c.tickNo+1))
	ch <- prometheus.MustNewConstMetric(m.topStreamsDesc, prometheus.GaugeValue, float64(len(c.subscribers)))
	m.mu.Lock()
	ch <- prometheus.MustNewConstMetric(m.seriesOverflowDesc, prometheus.CounterValue, float64(m.overflow))
	m.mu.Unlock()
}
