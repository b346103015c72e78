//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Names a kernel address with the kernel's own symbol lookup (bpf_snprintf
// "%ps", as the kernel prints a symbol: "nf_hook_slow", "fn [module]"): the
// daemon names the drop locations it sees this way, a few microseconds each,
// where two passes over /proc/kallsyms (~120k lines the kernel formats on each
// read) cost ~84 ms of CPU per batch of new addresses. Run by userspace with
// BPF_PROG_TEST_RUN, one address a run; the name is read back from ksym_name.
#include "headers/probe_types.h"
#include <bpf/bpf_helpers.h>

char __license[] SEC("license") = "Dual BSD/GPL";

#define KSYM_NAME_LEN 128

struct ksym_args {
	u64 addr;
};

struct ksym_buf {
	char name[KSYM_NAME_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct ksym_buf);
} ksym_name SEC(".maps");

SEC("syscall")
int name_address(struct ksym_args *ctx)
{
	u32 zero = 0;
	struct ksym_buf *out = bpf_map_lookup_elem(&ksym_name, &zero);
	if (!out)
		return 1;
	u64 args[1] = {ctx->addr};
	// Negative: the format was refused (cannot happen for this one).
	return bpf_snprintf(out->name, sizeof(out->name), "%ps", args, sizeof(args)) < 0;
}
