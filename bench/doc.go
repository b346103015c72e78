// Package bench holds the cross-component benchmarks of `make bench`: the DNS
// probe and the node daemon against real CoreDNS, dnsperf and dnsgen in lab
// pods (real control plane, pods as network namespaces and cgroups). Every
// benchmark reports its figures with b.ReportMetric; BENCHMARKS.md records
// them with the machine they ran on. Run as root:
//
//	go test -run '^$' -bench . -benchtime 1x ./bench
//
// ISOOBS_BENCH_FLOOD (a duration, default 60s) sets how long the real-kernel
// random-subdomain flood runs.
package bench
