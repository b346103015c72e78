package bpf

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"
)

// BenchmarkTCPIperf3Ratio is the throughput cost of isoobs's probes on real TCP between two
// pods: iperf3 (Debian's) from a client pod netns+cgroup to a server pod netns+cgroup over a
// veth pair, both pods under the probes' cgroup root, in alternating rounds with every probe
// attached (TCP with drops and peers, and DNS: what the daemon loads) and with none, in one
// run. Reported: the median throughput of each, their ratio (goal >= 0.98) and the spread of
// the per-pair ratios. ISOOBS_IPERF_ROUNDS (default 8) pairs of ISOOBS_IPERF_SECONDS (default
// 4) each, the first second of each omitted (-O 1, slow start).
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

	run := func() float64 {
		b.Helper()
		var out []byte
		var runErr error
		for try := 0; try < 3; try++ { // the server refuses while it ends the last test
			cmd := exec.Command(iperf, "-c", serverV4.String(), "-p", "5201", "-t", strconv.Itoa(seconds+1), "-O", "1", "-J")
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
	attach := func() func() {
		tp, err := LoadTCP(TCPOptions{CgroupRoot: root})
		if err != nil {
			b.Fatal(err)
		}
		dp, err := LoadDNS(Options{CgroupRoot: root})
		if err != nil {
			tp.Close()
			b.Fatal(err)
		}
		return func() { dp.Close(); tp.Close() }
	}
	run() // warm up: first connection, caches
	var with, without, ratios []float64
	for i := range rounds {
		// ABBA: which goes first alternates, so a drift in the machine's load favors neither.
		var w, wo float64
		measureWith := func() {
			detach := attach()
			w = run()
			detach()
		}
		if i%2 == 0 {
			measureWith()
			wo = run()
		} else {
			wo = run()
			measureWith()
		}
		with, without, ratios = append(with, w), append(without, wo), append(ratios, w/wo)
		b.Logf("round %d: with probes %.2f Gbit/s, without %.2f Gbit/s, ratio %.3f", i+1, w, wo, w/wo)
	}
	mw, mwo := iperfMedian(with), iperfMedian(without)
	b.ReportMetric(mw, "with-Gbit/s")
	b.ReportMetric(mwo, "without-Gbit/s")
	b.ReportMetric(mw/mwo, "ratio")
	b.ReportMetric(iperfMedian(ratios), "pair-ratio-median")
	b.ReportMetric(slices.Min(ratios), "pair-ratio-min")
	b.ReportMetric(slices.Max(ratios), "pair-ratio-max")
	b.Logf("iperf3 %s, %d pairs of %d s: with probes %.2f Gbit/s (%.2f-%.2f), without %.2f (%.2f-%.2f); ratio of medians %.3f, per-pair ratios %.3f-%.3f",
		iperfVersion(iperf), rounds, seconds, mw, slices.Min(with), slices.Max(with), mwo, slices.Min(without), slices.Max(without), mw/mwo, slices.Min(ratios), slices.Max(ratios))
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
