// SPDX-License-Identifier: GPL-2.0
/* Profile family: perf_event CPU-clock samples (one event per CPU at a fixed frequency) of the
 * target's user and kernel stacks, counted by (pid, stacks, comm) in the kernel. Userspace drains
 * the counts once a second by generation and symbolizes them. */
#include "sidecar.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define PERF_MAX_STACK_DEPTH 127

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__uint(value_size, PERF_MAX_STACK_DEPTH * sizeof(__u64));
} profile_stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, struct profile_key);
	__type(value, __u64);
} profile_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct profile_cfg);
} profile_config SEC(".maps");

/* [0] samples taken, [1] samples whose key did not fit the table */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} profile_totals SEC(".maps");

static __always_inline void total(__u32 i)
{
	__u64 *c = bpf_map_lookup_elem(&profile_totals, &i);

	if (c)
		*c += 1;
}

SEC("perf_event")
int profile_sample(struct bpf_perf_event_data *ctx)
{
	if (!sidecar_in_target())
		return 0;

	__u32 zero = 0;
	struct profile_cfg *cfg = bpf_map_lookup_elem(&profile_config, &zero);

	if (!cfg)
		return 0;

	struct profile_key k = {};
	struct bpf_pidns_info ns = {};

	if (!bpf_get_ns_current_pid_tgid(cfg->pidns_dev, cfg->pidns_ino, &ns, sizeof(ns)))
		k.pid = ns.tgid;
	k.generation = cfg->generation;
	k.user_stack = bpf_get_stackid(ctx, &profile_stacks, BPF_F_USER_STACK | BPF_F_REUSE_STACKID);
	k.kernel_stack = bpf_get_stackid(ctx, &profile_stacks, BPF_F_REUSE_STACKID);
	bpf_get_current_comm(k.comm, sizeof(k.comm));
	total(0);

	__u64 one = 1, *c = bpf_map_lookup_elem(&profile_counts, &k);

	if (c) {
		__sync_fetch_and_add(c, 1);
		return 0;
	}
	if (bpf_map_update_elem(&profile_counts, &k, &one, BPF_NOEXIST)) {
		c = bpf_map_lookup_elem(&profile_counts, &k);
		if (c)
			__sync_fetch_and_add(c, 1);
		else
			total(1);
	}
	return 0;
}
