#!/usr/bin/env bash
# The probes' share of the CPU while iperf3 moves data between two lab pods at full speed
# (BenchmarkTCPIperf3Ratio's lab), from perf samples of every CPU: samples under the cgroup_skb
# hook (__cgroup_bpf_run_filter_skb and below: the programs, their helpers and the kernel's
# dispatch of them) and under the BTF tracepoints' program runs (bpf_trace_run*), over the
# samples that are not the idle loop (do_idle), sampled during the iperf3 runs only (the bench
# enables perf through a control FIFO). The throughput ratio says the same thing but
# swings 5-10 % from round to round on this shared VM; sample shares do not depend on the
# machine's speed from one second to the next. perf record itself is the same for each variant.
#   hack/iperf-perf-share.sh [VARIANT ...]   (default: probes empty; see ISOOBS_IPERF_VARIANTS)
# Raw perf report lines and the shares go to bench/results/iperf-perf-share-<date>.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)" >&2; exit 1; }
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(probes empty)
mkdir -p bench/results
out=bench/results/iperf-perf-share-$(date -u +%Y%m%dT%H%M%SZ).txt
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/bpf.test" ./bpf
rounds=${ISOOBS_IPERF_ROUNDS:-3}
{
	echo "# command: hack/iperf-perf-share.sh ${variants[*]} (perf record -a -g -F 999, enabled during the iperf3 runs of BenchmarkTCPIperf3Ratio with ISOOBS_IPERF_VARIANTS=<variant> ISOOBS_IPERF_ROUNDS=$rounds)"
	echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "# commit: $(git rev-parse HEAD)$(git diff --quiet HEAD -- . ':!bench/results' || echo ' (uncommitted changes)')"
	echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), $(perf --version)"
	echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out"
for v in "${variants[@]}"; do
	echo "## variant $v" >>"$out"
	rm -f "$tmp/ctl" && mkfifo "$tmp/ctl"
	# Started disabled (-D -1): the bench enables it for its iperf3 runs only, through the FIFO.
	(cd bpf && ISOOBS_IPERF_VARIANTS=$v ISOOBS_IPERF_ROUNDS=$rounds ISOOBS_PERF_CTL=$tmp/ctl \
		perf record -q -a -g -F 999 -D -1 --control "fifo:$tmp/ctl" -o "$tmp/perf.data" -- "$tmp/bpf.test" -test.run '^$' -test.bench TCPIperf3Ratio -test.benchtime 1x -test.v) 2>&1 |
		grep -E 'round|Benchmark|ok|FAIL' | tee -a "$out"
	perf report -i "$tmp/perf.data" --children --sort sym -g none --percent-limit 0 2>/dev/null >"$tmp/report"
	grep -E '\] (do_idle|__cgroup_bpf_run_filter_skb|__bpf_prog_run_save_cb|bpf_trace_run[0-9]|bpf_prog_[0-9a-f]+_[a-z_]+|bpf_skb_cgroup_id|bpf_sk_storage_get|tcp_sendmsg|tcp_recvmsg)$' "$tmp/report" | tee -a "$out"
	awk -v v="$v" '
		/\] do_idle$/ { idle += $1 }
		/\] __cgroup_bpf_run_filter_skb$/ || /\] bpf_trace_run[0-9]$/ { bpf += $1 }
		END { printf "share %s: cgroup_skb and tracepoint programs %.2f %% of all samples, idle %.2f %%: %.2f %% of the busy CPU\n", v, bpf, idle, 100 * bpf / (100 - idle) }
	' <(sed 's/%//g' "$tmp/report") | tee -a "$out"
done
echo "raw output: $out"
