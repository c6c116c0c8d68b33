// SPDX-License-Identifier: GPL-2.0
/* Profile family: perf_event CPU-clock samples (one event per CPU at a fixed frequency) of the
 * target's user and kernel stacks, counted by (pid, stacks, comm) in the kernel. Userspace drains
 * the counts once a second by generation and symbolizes them. */
#include "sidecar.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define PERF_MAX_STACK_DEPTH 127

/* Per target (slot), see SIDECAR_SLOT_MAP: each sidecar sizes its slot's stack and count tables
 * for the sampling rate (the sizes here are the smallest: they size only the template map made
 * while the outer map is created), drains its own counts and flips its own generation. The program and its perf events are host-wide: one set per CPU, at the rate
 * of the sidecar that attached them (profile_host). */
struct profile_stacks_map {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 1024);
	SIDECAR_INNER_KV(__u32, __u64[PERF_MAX_STACK_DEPTH]);
};
SIDECAR_SLOT_MAP(profile_stacks, struct profile_stacks_map);

struct profile_counts_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	SIDECAR_INNER_KV(struct profile_key, __u64);
};
SIDECAR_SLOT_MAP(profile_counts, struct profile_counts_map);

struct profile_config_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	SIDECAR_INNER_KV(__u32, struct profile_cfg);
};
SIDECAR_SLOT_MAP(profile_config, struct profile_config_map);

/* [0] samples taken, [1] samples whose key did not fit the table */
struct profile_totals_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	SIDECAR_INNER_KV(__u32, __u64);
};
SIDECAR_SLOT_MAP(profile_totals, struct profile_totals_map);

/* Host-wide, read by userspace only: [0] the sampling rate (Hz) the perf events were opened
 * at, written by the sidecar that attached them; later sidecars of a shared kernel side sample
 * at that rate whatever their --profile-hz. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} profile_host SEC(".maps");

static __always_inline void total(void *totals, __u32 i, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(totals, &i);

	if (c)
		*c += n;
}

/* --cpu-budget's lower profiler rate: samples seen per CPU, to keep 1 in 2^k. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} profile_seen SEC(".maps");

SEC("perf_event")
int profile_sample(struct bpf_perf_event_data *ctx)
{
	int slot = sidecar_slot();

	if (slot < 0)
		return 0;

	__u32 zero = 0;
	struct sidecar_target *t = sidecar_slot_config(slot);
	__u32 shift = t ? (t->flags & SIDECAR_SLOT_PROFILE_MASK) >> SIDECAR_SLOT_PROFILE_SHIFT : 0;
	/* A kept sample stands for the 2^k the event fired (the stack walk is the cost saved; the
	 * timer interrupt itself still fires). */
	__u64 weight = 1ULL << shift;

	if (shift) {
		__u64 *seen = bpf_map_lookup_elem(&profile_seen, &zero);

		if (!seen || ((*seen)++ & (weight - 1)))
			return 0;
	}

	void *config = sidecar_slot_map(&profile_config, slot);
	void *stacks = sidecar_slot_map(&profile_stacks, slot);
	void *counts = sidecar_slot_map(&profile_counts, slot);
	void *totals = sidecar_slot_map(&profile_totals, slot);
	struct profile_cfg *cfg = config ? bpf_map_lookup_elem(config, &zero) : NULL;

	/* Any missing: the slot's sidecar does not profile. */
	if (!cfg || !stacks || !counts || !totals)
		return 0;

	struct profile_key k = {};
	struct bpf_pidns_info ns = {};

	if (!bpf_get_ns_current_pid_tgid(cfg->pidns_dev, cfg->pidns_ino, &ns, sizeof(ns)))
		k.pid = ns.tgid;
	k.generation = cfg->generation;
	k.user_stack = bpf_get_stackid(ctx, stacks, BPF_F_USER_STACK | BPF_F_REUSE_STACKID);
	k.kernel_stack = bpf_get_stackid(ctx, stacks, BPF_F_REUSE_STACKID);
	bpf_get_current_comm(k.comm, sizeof(k.comm));
	total(totals, 0, weight);

	__u64 *c = bpf_map_lookup_elem(counts, &k);

	if (c) {
		__sync_fetch_and_add(c, weight);
		return 0;
	}
	if (bpf_map_update_elem(counts, &k, &weight, BPF_NOEXIST)) {
		c = bpf_map_lookup_elem(counts, &k);
		if (c)
			__sync_fetch_and_add(c, weight);
		else
			total(totals, 1, weight);
	}
	return 0;
}
