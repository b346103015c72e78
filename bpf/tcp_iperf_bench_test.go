package bpf

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/isoobs/isoobs/bench/emptyprobe"
	"github.com/isoobs/isoobs/bpf/runstats"
)

// BenchmarkTCPIperf3Ratio is the throughput cost of isoobs's probes on real TCP between two
// pods: iperf3 (Debian's) from a client pod netns+cgroup to a server pod netns+cgroup over a
// veth pair, both pods under the probes' cgroup root, in alternating rounds with every probe
// attached (TCP with drops and peers, and DNS run by the TCP programs: what the daemon
// loads) and with none, in one
// run, and with empty cgroup_skb programs at the same root as a control (what the hooks alone
// do), and with each probe alone; the probes' maps are read every 500 ms, as the daemon reads
// them (a read gives pods their fast-path slots). A last round with the kernel's program
// statistics on gives the probes' own CPU time at that throughput. Reported: the median throughput of each, probes/none (goal >= 0.98), empty/none, and the
// spread of the per-round ratios. ISOOBS_IPERF_ROUNDS (default 8) rounds of
// ISOOBS_IPERF_SECONDS (default 4) per variant, the first second of each omitted (-O 1);
// ISOOBS_IPERF_AFFINITY pins the client and the server (iperf3's -A, e.g. 0,1);
// ISOOBS_IPERF_VARIANTS runs some variants only (e.g. probes: under perf). Logged: each
// CPU's busy share during a run (where the probes' time lands).
func BenchmarkTCPIperf3Ratio(b *testing.B) {
	iperf, err := exec.LookPath("iperf3")
	if err != nil {
		b.Skip("needs iperf3 (apt-get install iperf3; make deps installs it)")
	}
	rounds, seconds := iperfEnvInt("ISOOBS_IPERF_ROUNDS", 8), iperfEnvInt("ISOOBS_IPERF_SECONDS", 4)
	l := newLab(b)
	root := l.cgroup("node")
	client, server := l.cgroup("node/client-pod"), l.cgroup("node/server-pod")

	srv := exec.Command(iperf, "-s", "-B", serverV4.String(), "-p", "5201")
	if err := l.inCgroup(server, l.serverNS, srv.Start); err != nil {
		b.Fatalf("start iperf3 server: %v", err)
	}
	b.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	time.Sleep(300 * time.Millisecond) // the listener

	var lastBusy []float64 // each CPU's busy share during the last run
	warm := true           // the first run: not profiled
	run := func() float64 {
		b.Helper()
		cpu0 := cpuTimes(b)
		defer func() { lastBusy = busyShares(cpu0, cpuTimes(b)) }()
		if !warm {
			perfControl(b, "enable")
			defer perfControl(b, "disable")
		}
		var out []byte
		var runErr error
		for try := 0; try < 3; try++ { // the server refuses while it ends the last test
			args := []string{"-c", serverV4.String(), "-p", "5201", "-t", strconv.Itoa(seconds + 1), "-O", "1", "-J"}
			if aff := os.Getenv("ISOOBS_IPERF_AFFINITY"); aff != "" {
				args = append(args, "-A", aff)
			}
			cmd := exec.Command(iperf, args...)
			runErr = l.inCgroup(client, l.clientNS, func() error {
				var err error
				out, err = cmd.Output()
				return err
			})
			if runErr == nil {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if runErr != nil {
			b.Fatalf("iperf3 client: %v: %s", runErr, out)
		}
		var res struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
		}
		if err := json.Unmarshal(out, &res); err != nil || res.End.SumReceived.BitsPerSecond == 0 {
			b.Fatalf("iperf3 output (%v): %s", err, out)
		}
		return res.End.SumReceived.BitsPerSecond / 1e9
	}
	var probes iperfProbes // the last probes attached together
	attach := map[string]func() func(){
		"none": func() func() { return func() {} },
		// Empty cgroup_skb programs at the same root: what the hooks themselves do to the path.
		"empty": func() func() {
			e, err := emptyprobe.Attach(root)
			if err != nil {
				b.Fatal(err)
			}
			return func() { e.Close() }
		},
		// As the daemon loads them: the TCP programs run the DNS ones (Options.Chained).
		"probes": func() func() {
			dp, err := LoadDNS(Options{CgroupRoot: root, Chained: true})
			if err != nil {
				b.Fatal(err)
			}
			tp, err := LoadTCP(TCPOptions{CgroupRoot: root, DNS: dp})
			if err != nil {
				dp.Close()
				b.Fatal(err)
			}
			probes = iperfProbes{tp}
			stop := readLikeTheDaemon(b, tp, dp)
			return func() { stop(); tp.Close(); dp.Close() }
		},
		// Both attached on their own, two programs a packet (the daemon before 2026-12-04;
		// on request only: ISOOBS_IPERF_VARIANTS).
		"unchained": func() func() {
			tp, err := LoadTCP(TCPOptions{CgroupRoot: root})
			if err != nil {
				b.Fatal(err)
			}
			dp, err := LoadDNS(Options{CgroupRoot: root})
			if err != nil {
				tp.Close()
				b.Fatal(err)
			}
			stop := readLikeTheDaemon(b, tp, dp)
			return func() { stop(); dp.Close(); tp.Close() }
		},
		// Each probe alone: which one a cost below the goal comes from.
		"tcp": func() func() {
			tp, err := LoadTCP(TCPOptions{CgroupRoot: root})
			if err != nil {
				b.Fatal(err)
			}
			stop := readLikeTheDaemon(b, tp, nil)
			return func() { stop(); tp.Close() }
		},
		"dns": func() func() {
			dp, err := LoadDNS(Options{CgroupRoot: root})
			if err != nil {
				b.Fatal(err)
			}
			stop := readLikeTheDaemon(b, nil, dp)
			return func() { stop(); dp.Close() }
		},
	}
	variants := []string{"none", "empty", "probes", "tcp", "dns"}
	if v := os.Getenv("ISOOBS_IPERF_VARIANTS"); v != "" {
		// Some only (hack/iperf-perf-share.sh profiles one): medians, no ratios, no statistics round.
		variants = strings.Split(v, ",")
		for _, name := range variants {
			if attach[name] == nil {
				b.Fatalf("ISOOBS_IPERF_VARIANTS: no variant %q (none, empty, probes, unchained, tcp, dns)", name)
			}
		}
	}
	partial := !slices.Contains(variants, "none") || !slices.Contains(variants, "probes")
	run() // warm up: first connection, caches
	warm = false
	got := map[string][]float64{}
	var ratios, emptyRatios, tcpRatios, dnsRatios []float64
	for i := range rounds {
		// The order rotates each round (none/empty/probes, empty/probes/none, ...), so a drift
		// in the machine's load, or what attaching and detaching leave behind, favors none.
		r := map[string]float64{}
		for j := range variants {
			v := variants[(i+j)%len(variants)]
			detach := attach[v]()
			r[v] = run()
			detach()
			got[v] = append(got[v], r[v])
		}
		if partial {
			b.Logf("round %d: %v Gbit/s; each CPU busy %.2f in the last run", i+1, r, lastBusy)
			continue
		}
		ratios, emptyRatios = append(ratios, r["probes"]/r["none"]), append(emptyRatios, r["empty"]/r["none"])
		tcpRatios, dnsRatios = append(tcpRatios, r["tcp"]/r["none"]), append(dnsRatios, r["dns"]/r["none"])
		if i == 0 {
			b.Logf("round 1, the last run (%s): busy share of each CPU %.2f", variants[(i+len(variants)-1)%len(variants)], lastBusy)
		}
		b.Logf("round %d: none %.2f, empty programs %.2f, probes %.2f (TCP alone %.2f, DNS alone %.2f) Gbit/s; probes/none %.3f", i+1, r["none"], r["empty"], r["probes"], r["tcp"], r["dns"], r["probes"]/r["none"])
	}
	if partial {
		for _, v := range variants {
			b.ReportMetric(iperfMedian(got[v]), v+"-Gbit/s")
		}
		return
	}
	mw, mwo, me := iperfMedian(got["probes"]), iperfMedian(got["none"]), iperfMedian(got["empty"])
	b.ReportMetric(mw, "with-Gbit/s")
	b.ReportMetric(mwo, "without-Gbit/s")
	b.ReportMetric(me, "empty-Gbit/s")
	b.ReportMetric(mw/mwo, "ratio")
	b.ReportMetric(me/mwo, "empty-ratio")
	b.ReportMetric(iperfMedian(ratios), "pair-ratio-median")
	b.ReportMetric(slices.Min(ratios), "pair-ratio-min")
	b.ReportMetric(slices.Max(ratios), "pair-ratio-max")
	b.ReportMetric(iperfMedian(tcpRatios), "tcp-alone-pair-ratio-median")
	b.ReportMetric(iperfMedian(dnsRatios), "dns-alone-pair-ratio-median")
	// One more round with every probe and the kernel's program statistics on (they time each
	// run, which costs throughput: not in the rounds above): the probes' own CPU time, as a
	// share of one core and per packet, at that throughput.
	detach := attach["probes"]()
	stats, err := runstats.Enable()
	if err != nil {
		b.Fatal(err)
	}
	progs := probes.programs()
	before := readProgRun(b, progs...)
	each := make([]progRun, len(progs))
	for i, p := range progs {
		each[i] = readProgRun(b, p)
	}
	start := time.Now()
	statsGbit := run()
	wall := time.Since(start)
	used := readProgRun(b, progs...).sub(before)
	for i, p := range progs {
		if d := readProgRun(b, p).sub(each[i]); d.count > 0 {
			b.Logf("  %s: %.0f runs/s, %.0f ns a run, %.2f %% of a core", p, float64(d.count)/wall.Seconds(), d.nsPerRun(), 100*float64(d.runtime)/float64(wall))
		}
	}
	stats.Close()
	detach()
	b.ReportMetric(100*float64(used.runtime)/float64(wall), "probes-cpu-%-of-a-core")
	b.ReportMetric(used.nsPerRun(), "probes-ns/run")
	b.Logf("with the kernel's program statistics on: %.2f Gbit/s, each CPU busy %.2f; the probes ran %d times in %.1f s (%.0f runs/s) for %.1f ms (%.0f ns a run): %.2f %% of a core",
		statsGbit, lastBusy, used.count, wall.Seconds(), float64(used.count)/wall.Seconds(), float64(used.runtime)/1e6, used.nsPerRun(), 100*float64(used.runtime)/float64(wall))
	b.Logf("iperf3 %s, %d rounds of %d s each: probes %.2f Gbit/s (%.2f-%.2f), empty programs %.2f (%.2f-%.2f), none %.2f (%.2f-%.2f); probes/none: ratio of medians %.3f, per-round %.3f-%.3f (median %.3f); empty/none %.3f (per-round median %.3f)",
		iperfVersion(iperf), rounds, seconds, mw, slices.Min(got["probes"]), slices.Max(got["probes"]), me, slices.Min(got["empty"]), slices.Max(got["empty"]),
		mwo, slices.Min(got["none"]), slices.Max(got["none"]), mw/mwo, slices.Min(ratios), slices.Max(ratios), iperfMedian(ratios), me/mwo, iperfMedian(emptyRatios))
}

// iperfProbes are the probes attached together in a round: the TCP probe, running the DNS one.
type iperfProbes struct {
	tcp *TCPProbe
}

func (p iperfProbes) programs() []*ebpf.Program {
	o := p.tcp.objs
	// The DNS programs run inside the TCP ones (a tail call): their time is counted there.
	return []*ebpf.Program{o.TcpEgress, o.TcpIngress, o.TcpSetState, o.TcpRetransmit, o.TcpRetransmitSynack,
		o.TcpSendReset, o.TcpReceiveReset, o.DropSkb}
}

// readLikeTheDaemon reads the probes' counters every 500 ms, as the daemon does every
// second: a read gives the pods their fast-path slots. It returns a func that stops it.
func readLikeTheDaemon(b *testing.B, tp *TCPProbe, dp *DNSProbe) (stop func()) {
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			if tp != nil {
				if _, err := tp.ReadTCP(); err != nil {
					b.Error(err)
				}
			}
			if dp != nil {
				if _, err := dp.ReadPods(); err != nil {
					b.Error(err)
				}
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// perfControl sends cmd (enable, disable) to the perf record whose control FIFO is
// ISOOBS_PERF_CTL (hack/iperf-perf-share.sh), so it samples the iperf3 runs only; nothing
// without it.
func perfControl(b *testing.B, cmd string) {
	path := os.Getenv("ISOOBS_PERF_CTL")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		b.Fatalf("perf control FIFO: %v", err)
	}
	defer f.Close()
	if _, err := f.WriteString(cmd + "\n"); err != nil {
		b.Fatalf("perf control FIFO: %v", err)
	}
}

// cpuTimes is each CPU's busy and total time so far, in USER_HZ ticks, from /proc/stat.
func cpuTimes(b *testing.B) [][2]uint64 {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	var out [][2]uint64
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		var busy, total uint64
		for i, v := range f[1:] {
			n, _ := strconv.ParseUint(v, 10, 64)
			total += n
			if i != 3 && i != 4 { // idle, iowait
				busy += n
			}
		}
		out = append(out, [2]uint64{busy, total})
	}
	return out
}

func busyShares(before, after [][2]uint64) []float64 {
	out := make([]float64, min(len(before), len(after)))
	for i := range out {
		if t := after[i][1] - before[i][1]; t > 0 {
			out[i] = float64(after[i][0]-before[i][0]) / float64(t)
		}
	}
	return out
}

func iperfMedian(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func iperfEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func iperfVersion(path string) string {
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return "?"
	}
	var name, version string
	fmt.Sscan(string(out), &name, &version)
	return version
}
