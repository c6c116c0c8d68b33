// SPDX-License-Identifier: GPL-2.0
/* Process family: execs, exits (code or signal), forks, OOM victims.
 * Hooks: raw_tp sched_process_exec / sched_process_exit / sched_process_fork. Task fields are
 * read with CO-RE so the same object works across kernel versions. */
#include "sidecar.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define KEYS_MAX 1024

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KEYS_MAX);
	__type(key, struct comm_key);
	__type(value, __u64);
} process_execs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KEYS_MAX);
	__type(key, struct exit_key);
	__type(value, __u64);
} process_exits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PROCESS_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} process_counters SEC(".maps");

static __always_inline void bump(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&process_counters, &idx);

	if (c)
		*c += 1;
}

SEC("raw_tp/sched_process_exec")
int process_exec(unsigned long long *ctx)
{
	if (!sidecar_in_target())
		return 0;

	struct comm_key k = {};

	bpf_get_current_comm(k.comm, sizeof(k.comm));
	bump(PROCESS_EXECS);
	if (!sidecar_hash_inc(&process_execs, &k))
		bump(PROCESS_LOST_EXECS);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int process_exit(unsigned long long *ctx)
{
	if (!sidecar_in_target())
		return 0;

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	/* The tracepoint fires per thread; the process is gone when the last one leaves. */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;

	struct exit_key k = {};
	__u32 code = BPF_CORE_READ(task, exit_code);

	BPF_CORE_READ_STR_INTO(&k.comm, task, group_leader, comm);
	k.signal = code & 0x7f;
	k.code = k.signal ? 0 : (code >> 8) & 0xff;
	bump(PROCESS_EXITS);
	if (!sidecar_hash_inc(&process_exits, &k))
		bump(PROCESS_LOST_EXITS);
	if (BPF_CORE_READ(task, signal, oom_mm))
		bump(PROCESS_OOM_KILLS);
	return 0;
}

/* raw_tp args: ctx[0] = parent task, ctx[1] = child task */
SEC("raw_tp/sched_process_fork")
int process_fork(unsigned long long *ctx)
{
	if (!sidecar_in_target())
		return 0;

	struct task_struct *child = (struct task_struct *)ctx[1];

	if (BPF_CORE_READ(child, pid) == BPF_CORE_READ(child, tgid))
		bump(PROCESS_FORKS);
	else
		bump(PROCESS_THREADS);
	return 0;
}
