// SPDX-License-Identifier: GPL-2.0
/* Calls of a function of the user's own program, `int work(int kind, long cost_ns)`: per kind,
 * calls, summed and largest cost. Filters through `target_cgroup_id`, which the sidecar fills
 * before load (no sidecar.bpf.h needed for that). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

const volatile __u64 target_cgroup_id = 0;

struct work_stats {
	__u64 calls;
	__u64 cost_ns;
	__u64 max_cost_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct work_stats);
} work_calls SEC(".maps");

SEC("uprobe")
int on_work(struct pt_regs *ctx)
{
	struct work_stats *s, zero = {};
	__u32 k = (__u32)PT_REGS_PARM1(ctx);
	long cost_ns = (long)PT_REGS_PARM2(ctx);

	if (bpf_get_current_cgroup_id() != target_cgroup_id)
		return 0;
	s = bpf_map_lookup_elem(&work_calls, &k);
	if (!s) {
		bpf_map_update_elem(&work_calls, &k, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&work_calls, &k);
		if (!s)
			return 0;
	}
	__sync_fetch_and_add(&s->calls, 1);
	__sync_fetch_and_add(&s->cost_ns, cost_ns);
	if ((__u64)cost_ns > s->max_cost_ns)
		s->max_cost_ns = cost_ns;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
