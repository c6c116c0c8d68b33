// SPDX-License-Identifier: GPL-2.0
/* USDT myapp:job(kind, cost) of custom_usdt.c, read through usdt.bpf.h (argument specs filled by
 * the sidecar): jobs and summed cost per kind. */
#include "usdt.bpf.h"

struct job_stats {
	__u64 jobs;
	__u64 cost;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct job_stats);
} jobs SEC(".maps");

SEC("uprobe")
int on_job(struct pt_regs *ctx)
{
	struct job_stats *s, zero = {};
	struct usdt_spec *spec;
	__s64 kind, cost;
	__u32 k;

	if (!sidecar_in_target())
		return 0;
	spec = usdt_spec_of(ctx);
	if (!spec || usdt_arg(ctx, spec, 0, &kind) || usdt_arg(ctx, spec, 1, &cost))
		return 0;
	k = (__u32)kind;
	s = bpf_map_lookup_elem(&jobs, &k);
	if (!s) {
		bpf_map_update_elem(&jobs, &k, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&jobs, &k);
		if (!s)
			return 0;
	}
	__sync_fetch_and_add(&s->jobs, 1);
	__sync_fetch_and_add(&s->cost, cost);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
