package bench

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/isoobs/isoobs/bench/emptyprobe"
	"github.com/isoobs/isoobs/bpf"
	"github.com/isoobs/isoobs/bpf/runstats"
	"github.com/isoobs/isoobs/testlab/dnsgen"
)

// BenchmarkCoreDNSThroughputWithProbe runs dnsperf (as fast as CoreDNS
// answers, 4 clients x 100 outstanding) from a lab pod against the lab's real
// CoreDNS pod on the same node, rotating 3 s runs without any program, with
// the DNS probe attached to the node's cgroup root (it then sees every query
// and response twice: client pod and CoreDNS pod), and with empty cgroup_skb
// programs there (the hook's own cost). While the probe is attached its maps
// are read once a second as the daemon does. Short rotating runs spread the
// machine's other load over all arms. Metrics:
//   - qps-without, qps-with, qps-empty-progs (means over the rounds) and
//     ratio (with/without: the median of the rounds' ratios, robust to a
//     round disturbed by other work on the machine; target >= 0.97),
//     ratio-mean (sum with / sum without), ratio-empty-progs;
//   - exact: 1 when, in every with-probe run, the probe's per-pod counts equal
//     dnsperf's own: queries = sent, responses = completed, each rcode; 0
//     fails the benchmark. A query dnsperf gave up on (dnsperf-lost, its 2 s
//     timeout on a machine stalled by its neighbours) makes a round not
//     comparable: the failure then names dnsperf's losses, and the run is
//     repeated on a quieter machine rather than published;
//   - probe-net-ns/pkt-under-load: one more with-probe run with run-time
//     accounting on and empty programs beside the probe (both cost
//     throughput, so they are kept out of the ratio runs), and in that run
//     inflight-evicted and latency-samples from the probe's Stats.
func BenchmarkCoreDNSThroughputWithProbe(b *testing.B) {
	w := getWorld(b)
	ctx := context.Background()
	root := w.lab.Node(benchNode).CgroupRoot()
	const rounds = 8
	opts := dnsgen.DNSPerfOptions{Server: w.dns, Queries: dnsgen.LabQueryMix, Runs: 1 << 30,
		Duration: 3 * time.Second, Clients: dnsperfClients, Outstanding: 100, Timeout: 2 * time.Second}

	for i := 0; i < b.N; i++ {
		// Three arms per round: no program, the probe, and empty programs
		// (the cost of the cgroup_skb hook itself, which no probe avoids).
		const none, probe, empty = 0, 1, 2
		var sum [3]float64
		var ratios, emptyRatios []float64
		exact, lost := true, 0.0
		orders := [][3]int{{none, probe, empty}, {probe, empty, none}, {empty, none, probe}}
		for r := 0; r < rounds; r++ {
			var qps [3]float64
			for _, arm := range orders[r%3] {
				var p *bpf.DNSProbe
				var e *emptyprobe.Programs
				var err error
				switch arm {
				case probe:
					p, err = bpf.LoadDNS(bpf.Options{CgroupRoot: root})
				case empty:
					e, err = emptyprobe.Attach(root)
				}
				if err != nil {
					b.Fatal(err)
				}
				warmUp(b, w, p, opts)
				var before map[uint64]bpf.PodCounters
				stopReader := func() {}
				if p != nil {
					if before, err = p.ReadPods(); err != nil {
						b.Fatal(err)
					}
					stopReader = readLikeDaemon(b, p, time.Second)
				}
				res, err := dnsgen.RunDNSPerf(ctx, w.loadgen, opts)
				stopReader()
				if err != nil {
					b.Fatal(err)
				}
				qps[arm] = res.QPS
				if p != nil {
					lost += float64(res.Lost)
					if !countsMatch(b, p, w, before, res) {
						exact = false
					}
					p.Close()
				}
				if e != nil {
					e.Close()
				}
			}
			for a := range sum {
				sum[a] += qps[a]
			}
			ratios = append(ratios, qps[probe]/qps[none])
			emptyRatios = append(emptyRatios, qps[empty]/qps[none])
		}
		b.ReportMetric(sum[none]/rounds, "qps-without")
		b.ReportMetric(sum[probe]/rounds, "qps-with")
		b.ReportMetric(sum[empty]/rounds, "qps-empty-progs")
		b.ReportMetric(median(ratios), "ratio")
		b.ReportMetric(sum[probe]/sum[none], "ratio-mean")
		b.ReportMetric(median(emptyRatios), "ratio-empty-progs")
		reportExact(b, exact, fmt.Sprintf("probe counts differ from dnsperf's in a round (see the log); dnsperf lost %.0f queries", lost))
		b.ReportMetric(lost, "dnsperf-lost")
		b.Logf("probe/none ratios (sorted): %.3f", sorted(ratios))
		b.Logf("empty/none ratios (sorted): %.3f", sorted(emptyRatios))

		// Cost per packet under this load.
		stats, err := runstats.Enable()
		if err != nil {
			b.Fatal(err)
		}
		emptyProgs, err := emptyprobe.Attach(root)
		if err != nil {
			b.Fatal(err)
		}
		p, err := bpf.LoadDNS(bpf.Options{CgroupRoot: root})
		if err != nil {
			b.Fatal(err)
		}
		warmUp(b, w, p, opts)
		p0, _ := p.RunStats()
		e0, _ := emptyProgs.RunStats()
		stopReader := readLikeDaemon(b, p, time.Second)
		_, err = dnsgen.RunDNSPerf(ctx, w.loadgen, opts)
		stopReader()
		if err != nil {
			b.Fatal(err)
		}
		p1, _ := p.RunStats()
		e1, _ := emptyProgs.RunStats()
		if st, err := p.Stats(); err == nil {
			// Pending queries replaced before their answer came (the
			// 1,024-slot table's evictions) and answers matched to a query.
			b.ReportMetric(float64(st.InflightEvicted), "inflight-evicted")
			b.ReportMetric(float64(st.InflightMatched), "latency-samples")
		}
		p.Close()
		emptyProgs.Close()
		stats.Close()
		b.ReportMetric(p1.Sub(p0).NsPerRun()-e1.Sub(e0).NsPerRun(), "probe-net-ns/pkt-under-load")
	}
}

// countsMatch compares the probe's counters of the dnsperf pod since before
// with dnsperf's statistics.
func countsMatch(b *testing.B, p *bpf.DNSProbe, w *world, before map[uint64]bpf.PodCounters, res *dnsgen.DNSPerfResult) bool {
	all, err := p.ReadPods()
	if err != nil {
		b.Fatal(err)
	}
	var got bpf.PodCounters
	for _, id := range []uint64{w.loadgen.CgroupID, w.loadgen.ContainerCgroupID} {
		c, c0 := all[id], before[id]
		got.Queries += c.Queries - c0.Queries
		got.Responses += c.Responses - c0.Responses
		for j := range got.Rcode {
			got.Rcode[j] += c.Rcode[j] - c0.Rcode[j]
		}
		// The second REFUSED copies matching no pending query (see
		// refusedCopies and countsOf): counted as REFUSED when unchecked.
		got.Responses += c.Unsolicited - c0.Unsolicited
		got.Rcode[bpf.RcodeRefused] += c.Unsolicited - c0.Unsolicited
	}
	want := [bpf.NumRcodeSlots]uint64{res.RCodes["NOERROR"], res.RCodes["NXDOMAIN"], res.RCodes["SERVFAIL"], res.RCodes["REFUSED"]}
	for k, n := range res.RCodes {
		switch k {
		case "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED":
		default:
			want[bpf.RcodeOther] += n
		}
	}
	copies, copiesOK := refusedCopies(got.Rcode[bpf.RcodeRefused], res.RCodes["REFUSED"], dnsperfClients)
	want[bpf.RcodeRefused] += copies
	ok := copiesOK && got.Queries == res.Sent && got.Responses == res.Completed+copies && got.Rcode == want && res.Lost == 0
	if !ok || copies != res.RCodes["REFUSED"] {
		b.Logf("probe: queries %d responses %d rcodes %v; dnsperf: sent %d completed %d lost %d rcodes %v (REFUSED second copies received: %d of %d)",
			got.Queries, got.Responses, got.Rcode, res.Sent, res.Completed, res.Lost, want, copies, res.RCodes["REFUSED"])
	}
	return ok
}

// dnsperfClients is the number of dnsperf client sockets in the benchmarks.
const dnsperfClients = 4

// refusedCopies is how many second copies of REFUSED answers the pod
// received, from the REFUSED answers the probe (or the daemon) counted,
// unsolicited ones included, and those dnsperf completed. The lab CoreDNS's template plugin sends every
// REFUSED answer twice (checked packet by packet in
// e2e.TestCoreDNSRefusedTwice); dnsperf keeps the first copy and the pod
// receives both, except that a second copy arriving after dnsperf closed its
// socket at the end of the run reaches no socket and is never received (seen
// once in ~50 runs: one copy short). So at most one copy per dnsperf socket
// may be missing; ok is false for anything else.
func refusedCopies(counted, refused uint64, sockets int) (copies uint64, ok bool) {
	if counted < refused || counted > 2*refused {
		return 0, false
	}
	copies = counted - refused
	return copies, refused-copies <= uint64(sockets)
}

func median(v []float64) float64 {
	s := sorted(v)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func sorted(v []float64) []float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s
}

// warmUp runs the load for a second before an arm's measured run. With a
// freshly loaded probe it reads the maps every 300 ms meanwhile, which brings
// the probe where a running daemon's is: the pods on their fast-path slots and
// the busy dnsperf pod's latency sampled (both set by reads, the sampling from
// the pod's rate between two reads). Arms without the probe warm up alike.
func warmUp(b *testing.B, w *world, p *bpf.DNSProbe, opts dnsgen.DNSPerfOptions) {
	warmUpWith(b, w, p, opts, readLikeDaemon)
}

// warmUpWith is warmUp with the maps read by read.
func warmUpWith(b *testing.B, w *world, p *bpf.DNSProbe, opts dnsgen.DNSPerfOptions, read func(*testing.B, *bpf.DNSProbe, time.Duration) func()) {
	opts.Duration = time.Second
	stop := func() {}
	if p != nil {
		stop = read(b, p, 300*time.Millisecond)
	}
	_, err := dnsgen.RunDNSPerf(context.Background(), w.loadgen, opts)
	stop()
	if err != nil {
		b.Fatal(err)
	}
}

// readLikeDaemon reads the probe's maps every period while a load runs, as
// the daemon's collector does once a second, and returns a function that
// stops it.
func readLikeDaemon(b *testing.B, p *bpf.DNSProbe, period time.Duration) (stop func()) {
	return everyPeriod(b, period, func() error {
		if _, err := p.ReadPods(); err != nil {
			return err
		}
		return p.DrainNames(func(uint64, string, uint64, uint64) {})
	})
}

// assignSlotsLikeDaemon is readLikeDaemon for an earlier build of the probe whose counters
// have another layout: its pods get their fast-path slots as ReadPods would give them, and
// its names are drained.
func assignSlotsLikeDaemon(b *testing.B, p *bpf.DNSProbe, period time.Duration) (stop func()) {
	return everyPeriod(b, period, func() error {
		if err := p.AssignSlots(); err != nil {
			return err
		}
		return p.DrainNames(func(uint64, string, uint64, uint64) {})
	})
}

// everyPeriod runs read every period until stop is called.
func everyPeriod(b *testing.B, period time.Duration, read func() error) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if err := read(); err != nil {
				b.Error(err)
			}
		}
	}()
	return func() { close(done); <-finished }
}
