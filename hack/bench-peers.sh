#!/usr/bin/env bash
# make bench-peers: the same DNS load through no observer, empty cgroup programs, isoobs,
# Inspektor Gadget's ig trace_dns and tcpdump, rounds rotated, on this machine in one run
# (bench/peers, TestBenchPeers). The raw output, with date, machine, load and commit, goes to
# bench/results/peers-<UTC time>.txt (ISOOBS_PEERS_OUT overrides); its TABLE is what
# BENCHMARKS.md shows. Knobs (see bench/peers): ISOOBS_PEERS_ROUNDS, ISOOBS_PEERS_DURATION,
# ISOOBS_PEERS_RATES, ISOOBS_PEERS_SERVERS, ISOOBS_PEERS_FLOOD, ISOOBS_PEERS_OBSERVERS.
# The ig kit is ../shared/peers/inspektor-gadget beside the clone (ISOOBS_IG_KIT overrides).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
export ISOOBS_IG_KIT=${ISOOBS_IG_KIT:-$root/../shared/peers/inspektor-gadget}
# ig + trace_dns from the cache (make deps builds it; nothing is printed when cached).
bash testlab/scripts/build-bins.sh ig
out=${ISOOBS_PEERS_OUT:-bench/results/peers-$(date -u +%Y%m%dT%H%M%SZ).txt}
mkdir -p "$(dirname "$out")"
ig=${ISOOBS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/isoobs}/bin/ig-v0.51.1/ig
{
	echo "# make bench-peers (bash hack/bench-peers.sh): raw output"
	echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	dirty=""
	git diff --quiet HEAD -- bench/peers hack/bench-peers.sh || dirty=" (bench/peers or hack/bench-peers.sh modified)"
	echo "commit: $(git rev-parse HEAD)$dirty"
	# The binaries are built from the working tree: say whether it differs from the commit.
	echo "working tree: $(git status --porcelain --untracked-files=no | wc -l) tracked files modified, $(git status --porcelain | grep -c '^??') untracked"
	echo "machine: nproc=$(nproc) kernel=$(uname -r) cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1) mem=$(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
	echo "load at start (/proc/loadavg): $(cat /proc/loadavg)"
	echo "tools: $(dpkg-query -W -f='${Package} ${Version}; ' dnsperf tcpdump dnsmasq-base)ig $("$ig" version 2>/dev/null | head -1), CoreDNS v1.15.0"
	env | grep '^ISOOBS_PEERS_' | sed 's/^/env: /' || true
} | tee "$out"
set +e
ISOOBS_BENCH_PEERS=1 go test -count=1 -p 1 -run '^TestBenchPeers$' -v -timeout 150m ./bench/peers 2>&1 | grep -v '^dnsmasq\[' | tee -a "$out"
status=${PIPESTATUS[0]}
set -e
echo "load at end (/proc/loadavg): $(cat /proc/loadavg)" | tee -a "$out"
echo "bench-peers: raw output in $out" >&2
exit "$status"
