#!/usr/bin/env bash
# Cost breakdown of the DNS probe under dnsperf -> CoreDNS load: builds
# bpf/dns.c with parts compiled out (ABLATE_* macros) and runs
# BenchmarkProbeBuildsUnderLoad with the embedded probe beside them.
# The difference between two builds is what the part costs per packet.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d /tmp/isoobs-probe-parts.XXXXXX)
trap 'rm -rf "$out"' EXIT
objs=()
# label=macro: ports-only stops after the IP/UDP/TCP headers,
# cgroup-id after bpf_skb_cgroup_id, up-to-pod after
# the pod's counters; no-names and no-latency leave out those parts,
# no-name-slots counts every name in the hash table. time-all
# is the embedded probe with latency sampling off (every query timed).
for build in ports-only=AFTER_PORTS cgroup-id=AFTER_CGROUP_ID up-to-pod=AFTER_POD no-names=NAMES no-name-slots=NAME_SLOTS no-latency=LATENCY; do
	label=${build%%=*} macro=${build#*=}
	clang -O2 -g -Wall -target bpfel -c bpf/dns.c -o "$out/$label.o" -DABLATE_"$macro" -Wno-unused-function -Wno-unused-variable
	objs+=("$label=$out/$label.o")
done
objs+=("time-all=?timeall=1")
[ "${1:-}" = "" ] || objs=("$@" "${objs[@]}")
ISOOBS_PROBE_OBJECTS=$(IFS=,; echo "${objs[*]}") \
	go test ./bench -run '^$' -bench ProbeBuildsUnderLoad -benchtime 1x -count 1 -timeout 30m
