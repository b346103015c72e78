package dnsgen

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// ParseServer accepts "IP", "IP:port" or "[IPv6]:port"; the port defaults to 53.
func ParseServer(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("dnsgen: server %q is not IP, IP:port or [IPv6]:port", s)
	}
	return netip.AddrPortFrom(a.Unmap(), 53), nil
}

// ParseFlags reads the dnsgen command line (see `dnsgen -h`) into a Config.
func ParseFlags(args []string, stderr io.Writer) (Config, error) {
	var cfg Config
	fs := flag.NewFlagSet("dnsgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `dnsgen sends DNS queries and prints a JSON report (sent, answered, timeouts, rcodes, latency).
Examples:
  dnsgen --server 10.96.0.10 --names kubernetes.default.svc.cluster.local --qps 100 --duration 10s
  dnsgen --server [fd96::a]:53 --proto tcp --random-suffix example.com --concurrency 32 --count 100000
Flags:
`)
		fs.PrintDefaults()
	}
	server := fs.String("server", "", "DNS server IP[:port] or [IPv6]:port (required)")
	fs.StringVar(&cfg.Proto, "proto", "udp", "udp or tcp")
	names := fs.String("names", "", "comma-separated fixed names, asked round robin")
	namesFile := fs.String("names-file", "", "file with one name per line (added to --names)")
	fs.StringVar(&cfg.RandomSuffix, "random-suffix", "", "ask <random>.SUFFIX (random subdomains)")
	fs.Float64Var(&cfg.RandomFraction, "random-fraction", 0, "share of random names when --names is also given (default 0.5)")
	qtypes := fs.String("qtype", "A", "comma-separated query types, cycled: A, AAAA, ...")
	fs.Float64Var(&cfg.QPS, "qps", 0, "queries per second (0: as fast as --concurrency allows)")
	fs.IntVar(&cfg.Concurrency, "concurrency", 1, "queries in flight (one socket each)")
	fs.Int64Var(&cfg.Count, "count", 0, "stop after sending this many queries")
	fs.DurationVar(&cfg.Duration, "duration", 0, "stop sending after this long")
	fs.DurationVar(&cfg.Timeout, "timeout", 2*time.Second, "per-query timeout")
	fs.BoolVar(&cfg.PerName, "per-name", false, "report counts per query name")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed for random names (0: time based)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("dnsgen: unexpected argument %q (flags only; see dnsgen -h)", fs.Arg(0))
	}
	var err error
	if cfg.Server, err = ParseServer(*server); *server == "" || err != nil {
		return cfg, fmt.Errorf("dnsgen: --server IP[:port] is required (e.g. --server 10.96.0.10)")
	}
	cfg.Names = splitList(*names)
	if *namesFile != "" {
		b, err := os.ReadFile(*namesFile)
		if err != nil {
			return cfg, fmt.Errorf("dnsgen: --names-file: %w", err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				cfg.Names = append(cfg.Names, l)
			}
		}
	}
	cfg.QTypes = splitList(*qtypes)
	return cfg, cfg.normalize()
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Args renders cfg as a dnsgen command line (the inverse of ParseFlags). Names go on the
// command line; callers with thousands of names should write a --names-file instead.
func (cfg Config) Args() []string {
	args := []string{"--server", cfg.Server.String()}
	if cfg.Proto != "" {
		args = append(args, "--proto", cfg.Proto)
	}
	if len(cfg.Names) > 0 {
		args = append(args, "--names", strings.Join(cfg.Names, ","))
	}
	if cfg.RandomSuffix != "" {
		args = append(args, "--random-suffix", cfg.RandomSuffix)
	}
	if cfg.RandomFraction != 0 {
		args = append(args, "--random-fraction", strconv.FormatFloat(cfg.RandomFraction, 'g', -1, 64))
	}
	if len(cfg.QTypes) > 0 {
		args = append(args, "--qtype", strings.Join(cfg.QTypes, ","))
	}
	if cfg.QPS != 0 {
		args = append(args, "--qps", strconv.FormatFloat(cfg.QPS, 'g', -1, 64))
	}
	if cfg.Concurrency != 0 {
		args = append(args, "--concurrency", strconv.Itoa(cfg.Concurrency))
	}
	if cfg.Count != 0 {
		args = append(args, "--count", strconv.FormatInt(cfg.Count, 10))
	}
	if cfg.Duration != 0 {
		args = append(args, "--duration", cfg.Duration.String())
	}
	if cfg.Timeout != 0 {
		args = append(args, "--timeout", cfg.Timeout.String())
	}
	if cfg.PerName {
		args = append(args, "--per-name")
	}
	if cfg.Seed != 0 {
		args = append(args, "--seed", strconv.FormatUint(cfg.Seed, 10))
	}
	return args
}
