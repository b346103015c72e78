package dnsgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/isoobs/isoobs/testlab/podnet"
)

// LabQueryMix is the dnsperf query mix the benchmarks play against the lab's CoreDNS: cluster
// names (the kubernetes plugin) and the lab's fixed-rcode zones, so responses are a known mix
// of NOERROR, NXDOMAIN, SERVFAIL and REFUSED.
var LabQueryMix = []string{
	"kubernetes.default.svc.cluster.local A",
	"kube-dns.kube-system.svc.cluster.local A",
	"web.noerror.test A",
	"web.noerror.test AAAA",
	"nope.tenant-jobs.svc.cluster.local A",
	"gone.example A",
	"x.servfail.test A",
	"y.refused.test A",
}

// DNSPerfOptions run Debian's dnsperf (apt-get install dnsperf) as a second, independent load source.
type DNSPerfOptions struct {
	Server      netip.AddrPort
	Queries     []string      // data file lines: "name TYPE", e.g. "www.example.com A"
	Runs        int           // -n: passes through Queries (default 1); exact count = Runs*len(Queries)
	Duration    time.Duration // -l: time limit (0: none; then Runs bounds the run)
	QPS         float64       // -Q: limit (0: none)
	Clients     int           // -c (default 1)
	Outstanding int           // -q (default 100)
	TCP         bool          // -m tcp
	Timeout     time.Duration // -t per query (default dnsperf's 5s)
}

// DNSPerfResult is dnsperf's closing statistics.
type DNSPerfResult struct {
	Sent, Completed, Lost uint64
	RCodes                map[string]uint64 // "NOERROR", "NXDOMAIN", ...
	RunTimeSec            float64
	QPS                   float64
	AvgLatencySec         float64
	MinLatencySec         float64
	MaxLatencySec         float64
	LatencyStdDevSec      float64
}

// RunDNSPerf runs dnsperf inside pod and parses its statistics.
func RunDNSPerf(ctx context.Context, pod *podnet.Pod, opts DNSPerfOptions) (*DNSPerfResult, error) {
	bin, err := exec.LookPath("dnsperf")
	if err != nil {
		return nil, errors.New("dnsgen: dnsperf is not installed; run: apt-get install -y dnsperf")
	}
	if !opts.Server.IsValid() {
		return nil, errors.New("dnsgen: DNSPerfOptions.Server is missing")
	}
	if len(opts.Queries) == 0 {
		return nil, errors.New("dnsgen: DNSPerfOptions.Queries is empty; give lines like \"www.example.com A\"")
	}
	if opts.Runs == 0 {
		opts.Runs = 1
	}
	dir, err := os.MkdirTemp("", "dnsperf-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	data := filepath.Join(dir, "queries.txt")
	if err := os.WriteFile(data, []byte(strings.Join(opts.Queries, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	args := []string{"-s", opts.Server.Addr().String(), "-p", strconv.Itoa(int(opts.Server.Port())), "-d", data, "-n", strconv.Itoa(opts.Runs)}
	if opts.Server.Addr().Is6() {
		args = append(args, "-f", "inet6")
	} else {
		args = append(args, "-f", "inet")
	}
	if opts.Duration > 0 {
		args = append(args, "-l", strconv.FormatFloat(opts.Duration.Seconds(), 'f', -1, 64))
	}
	if opts.QPS > 0 {
		args = append(args, "-Q", strconv.FormatFloat(opts.QPS, 'f', 0, 64))
	}
	if opts.Clients > 0 {
		args = append(args, "-c", strconv.Itoa(opts.Clients))
	}
	if opts.Outstanding > 0 {
		args = append(args, "-q", strconv.Itoa(opts.Outstanding))
	}
	if opts.TCP {
		args = append(args, "-m", "tcp")
	}
	if opts.Timeout > 0 {
		args = append(args, "-t", strconv.FormatFloat(opts.Timeout.Seconds(), 'f', -1, 64))
	}
	cmd := pod.Command(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("dnsgen: dnsperf in pod %s: %v\n%s", pod, err, out.String())
	}
	res, err := ParseDNSPerf(out.String())
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, out.String())
	}
	return res, nil
}

// ParseDNSPerf reads the "Statistics:" block dnsperf prints at the end of a run.
func ParseDNSPerf(out string) (*DNSPerfResult, error) {
	i := strings.Index(out, "Statistics:")
	if i < 0 {
		return nil, errors.New("dnsgen: dnsperf output has no Statistics block (did it run to the end?)")
	}
	block := out[i:]
	if j := strings.Index(block, "Connection Statistics:"); j >= 0 {
		block = block[:j] // its Average Latency is about connects, not queries
	}
	res := &DNSPerfResult{RCodes: map[string]uint64{}}
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(block))
	for sc.Scan() {
		key, val, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		first := strings.Fields(val)
		if len(first) == 0 {
			continue
		}
		var err error
		switch key {
		case "Queries sent":
			res.Sent, err = strconv.ParseUint(first[0], 10, 64)
		case "Queries completed":
			res.Completed, err = strconv.ParseUint(first[0], 10, 64)
		case "Queries lost":
			res.Lost, err = strconv.ParseUint(first[0], 10, 64)
		case "Response codes":
			// "NOERROR 993 (50.03%), NXDOMAIN 992 (49.97%)"
			for _, part := range strings.Split(val, ",") {
				f := strings.Fields(part)
				if len(f) < 2 {
					return nil, fmt.Errorf("dnsgen: dnsperf response code entry %q is not \"CODE COUNT (PCT%%)\"", part)
				}
				n, perr := strconv.ParseUint(f[1], 10, 64)
				if perr != nil {
					return nil, fmt.Errorf("dnsgen: dnsperf response code count %q: %v", f[1], perr)
				}
				res.RCodes[f[0]] += n
			}
		case "Run time (s)":
			res.RunTimeSec, err = strconv.ParseFloat(first[0], 64)
		case "Queries per second":
			res.QPS, err = strconv.ParseFloat(first[0], 64)
		case "Average Latency (s)":
			// "0.009533 (min 0.000014, max 0.479274)"
			res.AvgLatencySec, err = strconv.ParseFloat(first[0], 64)
			if err == nil && len(first) >= 5 {
				res.MinLatencySec, _ = strconv.ParseFloat(strings.TrimSuffix(first[2], ","), 64)
				res.MaxLatencySec, _ = strconv.ParseFloat(strings.TrimSuffix(first[4], ")"), 64)
			}
		case "Latency StdDev (s)":
			res.LatencyStdDevSec, err = strconv.ParseFloat(first[0], 64)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("dnsgen: dnsperf %q value %q: %v", key, val, err)
		}
		seen[key] = true
	}
	for _, k := range []string{"Queries sent", "Queries completed", "Queries lost"} {
		if !seen[k] {
			return nil, fmt.Errorf("dnsgen: dnsperf statistics lack %q", k)
		}
	}
	return res, nil
}
