// Package peers is `make bench-peers`: the same DNS load (dnsperf and the lab's dnsgen in lab
// pods, against the lab's real CoreDNS and then a dnsmasq pod) played through each observer in
// turn, on one machine in one run, the observers' order rotated every round:
//
//   - none: no observer (the baseline), and empty: empty cgroup_skb programs at the node's
//     cgroup root (the hook's own cost, for calibration);
//   - isoobs: the isoobs-daemon binary with the chart's flags and GOMEMLIMIT, counting per pod;
//   - ig: Inspektor Gadget's ig v0.51.1 running its trace_dns gadget (--host, -o json), built
//     and run by the kit in ../shared/peers/inspektor-gadget (ISOOBS_IG_KIT overrides), its JSON
//     events counted per client IP by an awk counter that prints a table every second;
//   - tcpdump: `tcpdump -i any -Q in -nn -l 'udp and dst port 53 and net <lab>'` piped into the
//     same awk counter, per source address.
//
// The whole benchmark is TestBenchPeers, skipped unless ISOOBS_BENCH_PEERS=1 (hack/bench-peers.sh
// sets it and writes the raw output under bench/results/). TestPeersSmoke runs in `make test`:
// one short round per observer at 500 q/s, asserting that each counting observer counted the
// load pod's queries (isoobs exactly), so the harness cannot rot. Tests only; needs root.
package peers
