package peers

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isoobs/isoobs/testlab/dnsgen"
	"github.com/isoobs/isoobs/testlab/podnet"
)

// backgroundNames is what the flood's background pods ask (the daemon benchmarks' mix).
var backgroundNames = []string{
	"kubernetes.default.svc.cluster.local",
	"web.noerror.test",
	"nope.tenant-jobs.svc.cluster.local",
	"x.servfail.test",
}

// params of one benchmark run.
type params struct {
	rounds    int
	dur       time.Duration // each measured dnsperf step
	warm      time.Duration // dnsperf at the step's rate before it (0: none)
	rates     []float64     // dnsperf -Q; 0 = as fast as the server answers ("max")
	servers   []string      // "coredns", "dnsmasq"
	flood     time.Duration // the seed-000 random-subdomain flood (CoreDNS sessions only; 0: none)
	floodQPS  float64       // 0: as fast as 64 sockets go (the seed's flood)
	observers []string
}

// record is one measured step of one session.
type record struct {
	Server    string            `json:"server"`
	Observer  string            `json:"observer"`
	Load      string            `json:"load"` // "1k", "5k", "20k", "max", "flood"
	Round     int               `json:"round"`
	QPS       float64           `json:"qps"` // achieved: dnsperf's q/s, or the flood's
	Sent      uint64            `json:"sent"`
	Completed uint64            `json:"completed"`
	LoadLost  uint64            `json:"load_lost"`      // queries the load generator got no answer for
	ServerCPU float64           `json:"server_cpu_pct"` // % of one core, the DNS server pod's cgroup
	ObsCPU    float64           `json:"observer_cpu_pct"`
	ViewerCPU float64           `json:"viewer_cpu_pct,omitempty"` // isoobs: the plugin (not on the node)
	PeakRSS   float64           `json:"observer_peak_rss_mib"`
	Truth     map[string]uint64 `json:"sent_by_pod"`
	Counted   map[string]uint64 `json:"counted_by_pod,omitempty"`
	ObsLost   uint64            `json:"observer_lost"`
	CulpritS  *float64          `json:"culprit_s,omitempty"` // -1: never ranked first within the flood
	Wall      float64           `json:"wall_s"`
}

// complete is min over the step's pods of counted/sent (NaN for observers that count nothing).
func (r record) complete() float64 {
	if r.Counted == nil {
		return math.NaN()
	}
	c := math.Inf(1)
	for pod, sent := range r.Truth {
		if sent > 0 {
			c = math.Min(c, float64(r.Counted[pod])/float64(sent))
		}
	}
	return c
}

func rateLabel(r float64) string {
	switch {
	case r == 0:
		return "max"
	case r >= 1000 && math.Mod(r, 1000) == 0:
		return fmt.Sprintf("%.0fk", r/1000)
	}
	return fmt.Sprintf("%.0f", r)
}

// run plays every round; observers rotate (round r starts at observer r), as the throughput
// benchmark rotates its arms. logf receives progress and every record as a JSON line.
func run(t *testing.T, w *world, p params, logf func(string, ...any)) []record {
	var recs []record
	for r := 0; r < p.rounds; r++ {
		order := append(slices.Clone(p.observers[r%len(p.observers):]), p.observers[:r%len(p.observers)]...)
		for _, srv := range p.servers {
			for _, name := range order {
				got, err := session(w, p, srv, name, r, logf)
				if err != nil {
					t.Fatalf("round %d, %s, %s: %v", r, srv, name, err)
				}
				for _, rec := range got {
					b, _ := json.Marshal(rec)
					logf("RECORD %s", b)
				}
				recs = append(recs, got...)
			}
		}
	}
	return recs
}

// session starts one observer, plays every load through it, and stops it.
func session(w *world, p params, srv, name string, round int, logf func(string, ...any)) (recs []record, err error) {
	server, serverPod := w.coredns, w.corednsPod
	if srv == "dnsmasq" {
		server, serverPod = w.dnsmasq, w.dnsmasqPod
	}
	o := newObserver(name)
	t0 := time.Now()
	if err := o.start(w); err != nil {
		o.stop()
		return nil, fmt.Errorf("start: %w", err)
	}
	defer func() {
		if serr := o.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	// The ticker: 5 q/s all session long (a node is never silent; the peers' counters print on
	// events), and the readiness check: the observer has counted it.
	tickCtx, stopTick := context.WithCancel(context.Background())
	tickDone := make(chan struct{})
	go func() {
		defer close(tickDone)
		dnsgen.RunInPod(tickCtx, w.ticker, w.dnsgenBin, dnsgen.Config{Server: server, Names: []string{"tick.noerror.test"},
			QPS: 5, Concurrency: 1, Duration: time.Hour, Timeout: 2 * time.Second})
	}()
	defer func() { stopTick(); <-tickDone }()
	if c, _, _ := o.counts(); c != nil {
		deadline := time.Now().Add(2 * time.Minute)
		for {
			c, _, err := o.counts()
			if err != nil {
				return nil, err
			}
			if c[w.ticker.Name] > 0 {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("%s counted nothing of the ticker pod in 2 minutes", name)
			}
			time.Sleep(250 * time.Millisecond)
		}
	} else {
		time.Sleep(time.Second)
	}
	loadavg, _ := os.ReadFile("/proc/loadavg")
	logf("session round=%d server=%s observer=%s ready after %.1fs; loadavg %s", round, srv, name, time.Since(t0).Seconds(), strings.TrimSpace(string(loadavg)))

	for _, rate := range p.rates {
		opts := dnsgen.DNSPerfOptions{Server: server, Queries: dnsgen.LabQueryMix, Runs: 1 << 30, QPS: rate,
			Clients: 4, Outstanding: 100, Timeout: 2 * time.Second}
		if p.warm > 0 {
			// Warm up at the step's rate, and let the observer count all of it (the peers' counters
			// print each second) so that none of it lands in the measured step.
			before, _, err := o.counts()
			if err != nil {
				return nil, err
			}
			opts.Duration = p.warm
			res, err := dnsgen.RunDNSPerf(context.Background(), w.loadgen, opts)
			if err != nil {
				return nil, err
			}
			if before != nil {
				if _, _, err := settle(o, before, map[string]uint64{w.loadgen.Name: res.Sent}); err != nil {
					return nil, err
				}
			}
		}
		opts.Duration = p.dur
		rec := record{Server: srv, Observer: name, Load: rateLabel(rate), Round: round}
		err := measure(w, o, serverPod, &rec, func() (map[string]uint64, error) {
			res, err := dnsgen.RunDNSPerf(context.Background(), w.loadgen, opts)
			if err != nil {
				return nil, err
			}
			rec.QPS, rec.Sent, rec.Completed, rec.LoadLost = res.QPS, res.Sent, res.Completed, res.Lost
			return map[string]uint64{w.loadgen.Name: res.Sent}, nil
		})
		if err != nil {
			return nil, err
		}
		recs = append(recs, rec)
	}

	if srv == "coredns" && p.flood > 0 {
		rec := record{Server: srv, Observer: name, Load: "flood", Round: round}
		var floodStart time.Time
		err := measure(w, o, serverPod, &rec, func() (map[string]uint64, error) {
			// seed 000: recruiter (500 q/s) and loadgen (300 q/s) ask normal names; 2 s later the
			// crawler floods random subdomains of crawl.example.
			bgCtx, stopBg := context.WithCancel(context.Background())
			defer stopBg()
			var wg sync.WaitGroup
			bgReps := make([]*dnsgen.Report, 2)
			bgErrs := make([]error, 2)
			for i, bg := range []struct {
				pod *podnet.Pod
				qps float64
			}{{w.recruiter, 500}, {w.loadgen, 300}} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					bgReps[i], bgErrs[i] = dnsgen.RunInPod(bgCtx, bg.pod, w.dnsgenBin, dnsgen.Config{Server: server, Names: backgroundNames,
						QPS: bg.qps, Concurrency: 4, Duration: p.flood + 4*time.Second, Timeout: 2 * time.Second})
				}()
			}
			time.Sleep(2 * time.Second)
			floodStart = time.Now()
			rep, err := dnsgen.RunInPod(context.Background(), w.crawler, w.dnsgenBin, dnsgen.Config{Server: server,
				RandomSuffix: "crawl.example", QPS: p.floodQPS, Concurrency: 64, Duration: p.flood, Timeout: 2 * time.Second})
			if err != nil {
				return nil, err
			}
			wg.Wait()
			for _, e := range bgErrs {
				if e != nil {
					return nil, e
				}
			}
			rec.QPS, rec.Sent, rec.Completed = rep.QPS, rep.Sent, rep.Answered
			rec.LoadLost = rep.Timeouts + rep.Failed
			return map[string]uint64{w.crawler.Name: rep.Sent, w.recruiter.Name: bgReps[0].Sent, w.loadgen.Name: bgReps[1].Sent}, nil
		})
		if err != nil {
			return nil, err
		}
		if c, _, _ := o.counts(); c != nil {
			culprit := -1.0
			for _, f := range o.frames() {
				if f.at.After(floodStart) && f.top == w.crawler.Name {
					culprit = f.at.Sub(floodStart).Seconds()
					break
				}
			}
			rec.CulpritS = &culprit
		}
		recs = append(recs, rec)
	}
	if tr := o.tree(); tr != nil {
		peak := float64(tr.peakRSSKiB()) / 1024
		for i := range recs {
			recs[i].PeakRSS = peak
		}
	}
	return recs, nil
}

// measure runs load (which returns the queries each pod sent) and fills rec: the server's and the
// observer's CPU over the load's wall time (the observer's until its counts settled, so work it
// catches up on after the load is included), and what the observer counted per pod.
func measure(w *world, o observer, serverPod *podnet.Pod, rec *record, load func() (map[string]uint64, error)) error {
	before, lost0, err := o.counts()
	if err != nil {
		return err
	}
	tr := o.tree()
	var cpu0, view0 time.Duration
	if tr != nil {
		cpu0 = tr.cpu()
	}
	iso, _ := o.(*isoobsObs)
	if iso != nil {
		view0 = iso.pluginTree().cpu()
	}
	srv0, err := cgroupCPU(serverPod.CgroupPath)
	if err != nil {
		return err
	}
	t0 := time.Now()
	truth, err := load()
	if err != nil {
		return err
	}
	wall := time.Since(t0)
	srv1, err := cgroupCPU(serverPod.CgroupPath)
	if err != nil {
		return err
	}
	rec.Truth, rec.Wall = truth, wall.Seconds()
	rec.ServerCPU = 100 * (srv1 - srv0).Seconds() / wall.Seconds()
	if before != nil {
		got, lost, err := settle(o, before, truth)
		if err != nil {
			return err
		}
		rec.Counted, rec.ObsLost = got, lost-lost0
	}
	if tr != nil {
		rec.ObsCPU = 100 * (tr.cpu() - cpu0).Seconds() / wall.Seconds()
	}
	if iso != nil {
		rec.ViewerCPU = 100 * (iso.pluginTree().cpu() - view0).Seconds() / wall.Seconds()
	}
	return nil
}

// settle waits until the observer's counts since before reach truth for every pod, or no count
// moved for 2 s (15 s at most), and returns them with the observer's lost counter.
func settle(o observer, before, truth map[string]uint64) (map[string]uint64, uint64, error) {
	var last map[string]uint64
	var lost uint64
	lastChange, deadline := time.Now(), time.Now().Add(15*time.Second)
	for {
		now, l, err := o.counts()
		if err != nil {
			return nil, 0, err
		}
		got, done := map[string]uint64{}, true
		for pod, sent := range truth {
			got[pod] = now[pod] - before[pod]
			if got[pod] < sent {
				done = false
			}
		}
		if !mapsEqual(got, last) {
			lastChange = time.Now()
		}
		last, lost = got, l
		if done || time.Since(lastChange) > 2*time.Second || time.Now().After(deadline) {
			return last, lost, nil
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func mapsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// checkIsoobsExact fails the test when isoobs counted any pod's queries inexactly (peers losing
// events is a finding, not a failure).
func checkIsoobsExact(t *testing.T, recs []record) {
	t.Helper()
	for _, r := range recs {
		if r.Observer != "isoobs" {
			continue
		}
		for pod, sent := range r.Truth {
			if r.Counted[pod] != sent {
				t.Errorf("isoobs inexact: %s %s round %d pod %s: counted %d, sent %d", r.Server, r.Load, r.Round, pod, r.Counted[pod], sent)
			}
		}
		if r.ObsLost != 0 {
			t.Errorf("isoobs lost counter moved: %s %s round %d: %d", r.Server, r.Load, r.Round, r.ObsLost)
		}
	}
}

// ---- the table ----

// spread formats the median of v and its range over the rounds.
func spread(v []float64, prec int) string {
	v = slices.DeleteFunc(slices.Clone(v), func(x float64) bool { return math.IsNaN(x) })
	if len(v) == 0 {
		return "—"
	}
	slices.Sort(v)
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', prec, 64) }
	m := median(v)
	if len(v) == 1 || v[0] == v[len(v)-1] {
		return f(m)
	}
	return fmt.Sprintf("%s (%s–%s)", f(m), f(v[0]), f(v[len(v)-1]))
}

func median(s []float64) float64 {
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// table renders the medians (with min–max over rounds) per server, load and observer, in
// Markdown for BENCHMARKS.md. ratio is q/s with the observer / q/s with none in the same round.
func table(recs []record, p params) string {
	var b strings.Builder
	b.WriteString("| server | load | observer | DNS q/s | ratio vs none | server CPU % | observer CPU % | observer peak RSS MiB | complete % (min over pods) | observer's lost counter | culprit first (s) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	loads := []string{}
	for _, r := range p.rates {
		loads = append(loads, rateLabel(r))
	}
	if p.flood > 0 {
		loads = append(loads, "flood")
	}
	for _, srv := range p.servers {
		for _, load := range loads {
			none := map[int]float64{}
			for _, r := range recs {
				if r.Server == srv && r.Load == load && r.Observer == "none" {
					none[r.Round] = r.QPS
				}
			}
			for _, obs := range p.observers {
				var qps, ratio, scpu, ocpu, rss, comp, lost, cul []float64
				n := 0
				for _, r := range recs {
					if r.Server != srv || r.Load != load || r.Observer != obs {
						continue
					}
					n++
					qps = append(qps, r.QPS)
					if q, ok := none[r.Round]; ok && q > 0 {
						ratio = append(ratio, r.QPS/q)
					}
					scpu = append(scpu, r.ServerCPU)
					if obs != "none" && obs != "empty" {
						ocpu = append(ocpu, r.ObsCPU)
						rss = append(rss, r.PeakRSS)
						comp = append(comp, 100*r.complete())
						lost = append(lost, float64(r.ObsLost))
					}
					if r.CulpritS != nil {
						cul = append(cul, *r.CulpritS)
					}
				}
				if n == 0 {
					continue
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", srv, load, obs,
					spread(qps, 0), spread(ratio, 3), spread(scpu, 1), spread(ocpu, 1), spread(rss, 1),
					spread(comp, 3), spread(lost, 0), spread(cul, 2))
			}
		}
	}
	return b.String()
}

// ---- the tests ----

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

func envList(name string, def []string) []string {
	if v := os.Getenv(name); v != "" {
		return strings.Split(v, ",")
	}
	return def
}

// TestBenchPeers is `make bench-peers` (hack/bench-peers.sh): skipped unless
// ISOOBS_BENCH_PEERS=1. Knobs: ISOOBS_PEERS_ROUNDS (3), ISOOBS_PEERS_DURATION (10s per step),
// ISOOBS_PEERS_RATES (1000,5000,20000,max), ISOOBS_PEERS_SERVERS (coredns,dnsmasq),
// ISOOBS_PEERS_FLOOD (10s), ISOOBS_PEERS_OBSERVERS (none,empty,isoobs,ig,tcpdump).
func TestBenchPeers(t *testing.T) {
	if os.Getenv("ISOOBS_BENCH_PEERS") != "1" {
		t.Skip("the peer benchmark runs from `make bench-peers` (ISOOBS_BENCH_PEERS=1)")
	}
	p := params{
		rounds:    envInt("ISOOBS_PEERS_ROUNDS", 3),
		dur:       envDuration("ISOOBS_PEERS_DURATION", 10*time.Second),
		warm:      time.Second,
		servers:   envList("ISOOBS_PEERS_SERVERS", []string{"coredns", "dnsmasq"}),
		flood:     envDuration("ISOOBS_PEERS_FLOOD", 10*time.Second),
		observers: envList("ISOOBS_PEERS_OBSERVERS", allObservers),
	}
	for _, r := range envList("ISOOBS_PEERS_RATES", []string{"1000", "5000", "20000", "max"}) {
		if r == "max" {
			p.rates = append(p.rates, 0)
			continue
		}
		v, err := strconv.ParseFloat(r, 64)
		if err != nil {
			t.Fatalf("ISOOBS_PEERS_RATES: %q", r)
		}
		p.rates = append(p.rates, v)
	}
	w := getWorld(t)
	logf := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	logf("params: rounds=%d step=%s warm=%s rates=%v servers=%v flood=%s observers=%v lab=%s net=%s",
		p.rounds, p.dur, p.warm, p.rates, p.servers, p.flood, p.observers, w.lab.ID, w.labNet)
	recs := run(t, w, p, logf)
	fmt.Printf("\nTABLE (medians, min–max over %d rounds)\n\n%s\n", p.rounds, table(recs, p))
	checkIsoobsExact(t, recs)
}

// TestPeersSmoke keeps the harness alive in `make test`: one short session per observer at
// 500 q/s and a 3 s flood at 1,000 q/s against CoreDNS. Every counting observer must have
// counted the load pod's queries; isoobs exactly, and it must rank the crawler first.
func TestPeersSmoke(t *testing.T) {
	w := getWorld(t)
	p := params{rounds: 1, dur: 3 * time.Second, rates: []float64{500}, servers: []string{"coredns"},
		flood: 3 * time.Second, floodQPS: 1000, observers: allObservers}
	recs := run(t, w, p, t.Logf)
	t.Logf("\n%s", table(recs, p))
	checkIsoobsExact(t, recs)
	seen := map[string]bool{}
	for _, r := range recs {
		seen[r.Observer] = true
		if r.Load == "500" && r.Sent == 0 {
			t.Errorf("%s: dnsperf sent nothing", r.Observer)
		}
		switch r.Observer {
		case "isoobs", "ig", "tcpdump":
			if r.Counted[w.loadgen.Name] == 0 {
				t.Errorf("%s counted no query of %s (%s load)", r.Observer, w.loadgen.Name, r.Load)
			}
			if r.ObsCPU <= 0 {
				t.Errorf("%s: no observer CPU measured", r.Observer)
			}
		}
		if r.Observer == "isoobs" && r.Load == "flood" && (r.CulpritS == nil || *r.CulpritS < 0) {
			t.Errorf("isoobs never ranked the crawler first during the flood")
		}
	}
	for _, o := range allObservers {
		if !seen[o] {
			t.Errorf("no record of observer %s", o)
		}
	}
}
