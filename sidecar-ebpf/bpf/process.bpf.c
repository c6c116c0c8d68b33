// SPDX-License-Identifier: GPL-2.0
/* Process family: execs, exits (code or signal), forks, OOM victims.
 * Hooks: raw_tp sched_process_exec / sched_process_exit / sched_process_fork. Task fields are
 * read with CO-RE so the same object works across kernel versions. */
#include "sidecar.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define KEYS_MAX 1024

/* Per target (slot): see SIDECAR_SLOT_MAP. */
/* Hash tables per slot are not preallocated: a slot pays for the entries its target makes. */
struct process_execs_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KEYS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	SIDECAR_INNER_KV(struct comm_key, __u64);
};
SIDECAR_SLOT_MAP(process_execs, struct process_execs_map);

struct process_exits_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KEYS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	SIDECAR_INNER_KV(struct exit_key, __u64);
};
SIDECAR_SLOT_MAP(process_exits, struct process_exits_map);

struct process_counters_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PROCESS_COUNTERS);
	SIDECAR_INNER_KV(__u32, __u64);
};
SIDECAR_SLOT_MAP(process_counters, struct process_counters_map);

static __always_inline void bump(__u32 slot, __u32 idx)
{
	void *m = sidecar_slot_map(&process_counters, slot);
	__u64 *c = m ? bpf_map_lookup_elem(m, &idx) : NULL;

	if (c)
		*c += 1;
}

SEC("raw_tp/sched_process_exec")
int process_exec(unsigned long long *ctx)
{
	int slot = sidecar_slot();

	if (slot < 0)
		return 0;

	struct comm_key k = {};
	void *execs = sidecar_slot_map(&process_execs, slot);

	bpf_get_current_comm(k.comm, sizeof(k.comm));
	bump(slot, PROCESS_EXECS);
	if (!execs || !sidecar_hash_inc(execs, &k))
		bump(slot, PROCESS_LOST_EXECS);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int process_exit(unsigned long long *ctx)
{
	int slot = sidecar_slot();

	if (slot < 0)
		return 0;

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	void *exits = sidecar_slot_map(&process_exits, slot);

	/* The tracepoint fires per thread; the process is gone when the last one leaves. */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;

	struct exit_key k = {};
	__u32 code = BPF_CORE_READ(task, exit_code);

	BPF_CORE_READ_STR_INTO(&k.comm, task, group_leader, comm);
	k.signal = code & 0x7f;
	k.code = k.signal ? 0 : (code >> 8) & 0xff;
	bump(slot, PROCESS_EXITS);
	if (!exits || !sidecar_hash_inc(exits, &k))
		bump(slot, PROCESS_LOST_EXITS);
	if (BPF_CORE_READ(task, signal, oom_mm))
		bump(slot, PROCESS_OOM_KILLS);
	return 0;
}

/* raw_tp args: ctx[0] = parent task, ctx[1] = child task */
SEC("raw_tp/sched_process_fork")
int process_fork(unsigned long long *ctx)
{
	int slot = sidecar_slot();

	if (slot < 0)
		return 0;

	struct task_struct *child = (struct task_struct *)ctx[1];

	if (BPF_CORE_READ(child, pid) == BPF_CORE_READ(child, tgid))
		bump(slot, PROCESS_FORKS);
	else
		bump(slot, PROCESS_THREADS);
	return 0;
}
