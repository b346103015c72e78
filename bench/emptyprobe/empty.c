//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Empty cgroup_skb programs: benchmarks attach them beside the DNS
// probe and subtracts their per-packet cost (hook + stats overhead) so the
// reported number is the probe's own work.
#include "../../bpf/headers/probe_types.h"
#include <bpf/bpf_helpers.h>

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("cgroup_skb/egress")
int empty_egress(struct __sk_buff *skb)
{
	return 1;
}

SEC("cgroup_skb/ingress")
int empty_ingress(struct __sk_buff *skb)
{
	return 1;
}
