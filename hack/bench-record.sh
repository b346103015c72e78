#!/usr/bin/env bash
# Runs one benchmark and keeps its raw `go test -bench` output under bench/results/, headed by
# what a reader needs to check a figure: date, commit, machine, load. BENCHMARKS.md links these.
#   hack/bench-record.sh NAME PACKAGE PATTERN [go test flags...]
# e.g. hack/bench-record.sh fanout ./plugin/cluster FanOut -benchtime 3x
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1 pkg=$2 pattern=$3
shift 3
mkdir -p bench/results
out=bench/results/$name-$(date -u +%Y%m%dT%H%M%SZ).txt
{
	echo "# command: go test -run '^\$' -bench '$pattern' -benchmem -count=1 $* $pkg"
	echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "# commit: $(git rev-parse HEAD)$(git diff --quiet HEAD -- . ':!bench/results' || echo ' (uncommitted changes)')"
	echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), $(go version | cut -d' ' -f3)"
	env | grep '^ISOOBS_' | sed 's/^/# env: /' || true
	echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out"
go test -run '^$' -bench "$pattern" -benchmem -count=1 -timeout 60m "$@" "$pkg" 2>&1 | tee -a "$out"
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out"
echo "raw output: $out" >&2
