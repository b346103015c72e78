#!/usr/bin/env bash
# Installs what the repo needs on a fresh Debian machine of the lab kind; idempotent
# and quiet when everything is already there.
set -euo pipefail
# containerd, runc and the CNI plugins run the lab's real node (kubelet); iptables routes its pods to the API server.
# tcpdump and dnsmasq-base: a peer observer and the second DNS server of `make bench-peers`.
# iperf3: the TCP throughput benchmark with and without the probes (BenchmarkTCPIperf3Ratio).
APT_PACKAGES=(clang llvm libbpf-dev bpftool dnsperf protobuf-compiler iproute2 dnsutils containerd runc containernetworking-plugins iptables tcpdump dnsmasq-base iperf3)
missing=()
for p in "${APT_PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "deps: missing packages ${missing[*]}; run 'sudo make deps'" >&2
		exit 1
	fi
	echo "deps: installing ${missing[*]}" >&2
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# bpffs: cilium/ebpf does not need pinning, but bpftool and the daemon's pins do.
if [[ $(id -u) -eq 0 ]] && ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
	mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
fi
here=$(dirname "$0")
# The lab's real components (control plane, etcd, kwok, CoreDNS, the hubble CLI, kubelet and
# kubectl, krew, Inspektor Gadget's ig with its trace_dns gadget for `make bench-peers`), cached
# outside the repo, and promtool with Kubernetes discovery (Debian's lacks it).
"$here/../testlab/scripts/build-bins.sh" etcd kwok coredns k8s hubble node krew ig
sh "$here/../install/scripts/build-promtool.sh" >/dev/null
# Prometheus's PromQL parser as a tool: the dashboard and alert tests parse every expression with it.
sh "$here/build-promql-lint.sh" >/dev/null
# The OpenTelemetry Collector (contrib, prometheus receiver) for the splunk pipeline's test.
sh "$here/build-otelcol.sh" >/dev/null
