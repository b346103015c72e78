package bench

import (
	"context"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/isoobs/isoobs/bench/emptyprobe"
	"github.com/isoobs/isoobs/bpf"
	"github.com/isoobs/isoobs/bpf/runstats"
	"github.com/isoobs/isoobs/testlab/dnsgen"
)

// BenchmarkProbeBuildsUnderLoad compares builds of the probe object under the
// dnsperf -> CoreDNS load of BenchmarkCoreDNSThroughputWithProbe: the
// embedded probe and every object named in ISOOBS_PROBE_OBJECTS
// ("label=path,label=path": e.g. dns.c compiled with parts left out, to see
// what each part costs; "path?inflight=N&names=N&pods=N" sets table sizes,
// "?timeall=1" turns latency sampling off, "?slotsonly=1" reads an earlier
// build whose counters have another layout (its pods get their fast-path
// slots, no counters are read), and an empty path is the embedded object). Each arm is warmed up for a second first (warmUp). Builds are attached in turn, rounds rotating the
// order, each beside empty programs with run-time accounting on, its maps
// read once a second as the daemon does. Metrics per
// build: <label>-net-ns/pkt (probe minus empty programs, all rounds) and
// <label>-qps. With ISOOBS_PROBE_BUILDS_MODE=throughput there is no
// accounting and no empty programs, and a "none" arm runs without any program:
// <label>-ratio is the median over rounds of the build's q/s over none's.
func BenchmarkProbeBuildsUnderLoad(b *testing.B) {
	w := getWorld(b)
	ctx := context.Background()
	root := w.lab.Node(benchNode).CgroupRoot()
	type build struct {
		label, path string
		opts        bpf.Options
		slotsOnly   bool
	}
	builds := []build{{label: "embedded", opts: bpf.Options{CgroupRoot: root}}}
	if env := os.Getenv("ISOOBS_PROBE_OBJECTS"); env != "" {
		for _, kv := range strings.Split(env, ",") {
			label, path, ok := strings.Cut(kv, "=")
			if !ok {
				b.Fatalf("ISOOBS_PROBE_OBJECTS: %q is not label=path", kv)
			}
			bl := build{label: label, path: path, opts: bpf.Options{CgroupRoot: root}}
			if p, q, ok := strings.Cut(path, "?"); ok {
				bl.path = p
				vals, err := url.ParseQuery(q)
				if err != nil {
					b.Fatal(err)
				}
				bl.opts.TimeEveryQuery = vals.Get("timeall") == "1"
				bl.slotsOnly = vals.Get("slotsonly") == "1"
				for k, dst := range map[string]*uint32{"inflight": &bl.opts.MaxInflight, "names": &bl.opts.MaxNames, "pods": &bl.opts.MaxPods} {
					if v := vals.Get(k); v != "" {
						n, err := strconv.ParseUint(v, 10, 32)
						if err != nil {
							b.Fatalf("ISOOBS_PROBE_OBJECTS: %s: %v", kv, err)
						}
						*dst = uint32(n)
					}
				}
			}
			builds = append(builds, bl)
		}
	}
	opts := dnsgen.DNSPerfOptions{Server: w.dns, Queries: dnsgen.LabQueryMix, Runs: 1 << 30,
		Duration: 3 * time.Second, Clients: 4, Outstanding: 100, Timeout: 2 * time.Second}
	throughput := os.Getenv("ISOOBS_PROBE_BUILDS_MODE") == "throughput"
	rounds := 4
	if throughput {
		rounds = 8
		builds = append(builds, build{label: "none", path: "-"})
	} else {
		stats, err := runstats.Enable()
		if err != nil {
			b.Fatal(err)
		}
		defer stats.Close()
	}
	for i := 0; i < b.N; i++ {
		probeRun := make([]runstats.Stats, len(builds))
		emptyRun := make([]runstats.Stats, len(builds))
		qps := make([]float64, len(builds))
		ratios := make([][]float64, len(builds))
		for r := 0; r < rounds; r++ {
			roundQPS := make([]float64, len(builds))
			for k := range builds {
				j := (k + r) % len(builds)
				if builds[j].path == "-" {
					warmUp(b, w, nil, opts)
					res, err := dnsgen.RunDNSPerf(ctx, w.loadgen, opts)
					if err != nil {
						b.Fatal(err)
					}
					roundQPS[j] = res.QPS
					qps[j] += res.QPS / float64(rounds)
					continue
				}
				var emptyProgs *emptyprobe.Programs
				var err error
				if !throughput {
					if emptyProgs, err = emptyprobe.Attach(root); err != nil {
						b.Fatal(err)
					}
				}
				var p *bpf.DNSProbe
				if builds[j].path == "" {
					p, err = bpf.LoadDNS(builds[j].opts)
				} else {
					p, err = bpf.LoadDNSObject(builds[j].path, builds[j].opts)
				}
				if err != nil {
					b.Fatalf("%s: %v", builds[j].label, err)
				}
				read := readLikeDaemon
				if builds[j].slotsOnly {
					read = assignSlotsLikeDaemon
				}
				warmUpWith(b, w, p, opts, read)
				p0, _ := p.RunStats()
				var e0, e1 runstats.Stats
				if emptyProgs != nil {
					e0, _ = emptyProgs.RunStats()
				}
				stopReader := read(b, p, time.Second)
				res, err := dnsgen.RunDNSPerf(ctx, w.loadgen, opts)
				stopReader()
				if err != nil {
					b.Fatal(err)
				}
				p1, _ := p.RunStats()
				if emptyProgs != nil {
					e1, _ = emptyProgs.RunStats()
					emptyProgs.Close()
				}
				p.Close()
				d, e := p1.Sub(p0), e1.Sub(e0)
				probeRun[j].Runtime += d.Runtime
				probeRun[j].Runs += d.Runs
				emptyRun[j].Runtime += e.Runtime
				emptyRun[j].Runs += e.Runs
				roundQPS[j] = res.QPS
				qps[j] += res.QPS / float64(rounds)
			}
			if throughput {
				none := roundQPS[len(builds)-1]
				for j := range builds {
					ratios[j] = append(ratios[j], roundQPS[j]/none)
				}
			}
		}
		for j, bl := range builds {
			b.ReportMetric(qps[j], bl.label+"-qps")
			if throughput {
				b.ReportMetric(median(ratios[j]), bl.label+"-ratio")
				b.Logf("%s/none ratios (sorted): %.3f", bl.label, sorted(ratios[j]))
			} else {
				b.ReportMetric(probeRun[j].NsPerRun()-emptyRun[j].NsPerRun(), bl.label+"-net-ns/pkt")
			}
		}
	}
}
