// SPDX-License-Identifier: GPL-2.0
/* Syscall family: calls, failures by errno, time and latency per syscall, aggregated here.
 * Hooks: raw_tp sys_enter / sys_exit (raw tracepoints: no argument copying, stable since 4.17),
 * and sched_process_exit to forget threads that leave in the middle of a syscall (exit_group). */
#include "sidecar.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* Set at load: measure per-call latency (two clock reads and a task-storage lookup per call), or
 * only count calls and errors. */
const volatile __u8 measure_latency = 1;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SIDECAR_SYSCALL_SLOTS);
	__type(key, __u32);
	__type(value, struct syscall_stats);
} syscall_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct syscall_error_key);
	__type(value, __u64);
} syscall_errors SEC(".maps");

struct start {
	__u64 ts;
	__u64 nr;
};

/* The call in flight, per thread: task-local storage lives in the task itself, so no hash lookup,
 * no table to fill up, and nothing to clean when the thread dies. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct start);
} syscall_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SYSCALLS_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} syscalls_counters SEC(".maps");

static __always_inline void bump_counter(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&syscalls_counters, &idx);

	if (c)
		*c += 1;
}

static __always_inline __u32 slot(__u64 nr)
{
	return nr < SIDECAR_SYSCALL_SLOTS ? (__u32)nr : SIDECAR_SYSCALL_SLOTS - 1;
}

/* raw_tp args: ctx[0] = struct pt_regs *, ctx[1] = syscall number */
SEC("raw_tp/sys_enter")
int sys_enter(unsigned long long *ctx)
{
	if (!sidecar_in_target())
		return 0;

	__u64 nr = ctx[1];
	__u32 s = slot(nr);
	struct syscall_stats *st = bpf_map_lookup_elem(&syscall_stats, &s);

	if (st)
		st->calls++;
	if (!measure_latency)
		return 0;

	struct start *v = bpf_task_storage_get(&syscall_start, bpf_get_current_task_btf(), 0,
					       BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (!v) {
		bump_counter(SYSCALLS_LOST_STARTS);
		return 0;
	}
	v->ts = bpf_ktime_get_ns();
	v->nr = nr;
	return 0;
}

/* raw_tp args: ctx[0] = struct pt_regs *, ctx[1] = return value */
SEC("raw_tp/sys_exit")
int sys_exit(unsigned long long *ctx)
{
	long ret = (long)ctx[1];
	__u64 nr;

	/* Counting only: successful calls (nearly all) leave before the filter. */
	if (!measure_latency && (ret >= 0 || ret < -4095))
		return 0;
	if (!sidecar_in_target())
		return 0;

	if (measure_latency) {
		struct start *v = bpf_task_storage_get(&syscall_start, bpf_get_current_task_btf(), 0, 0);

		if (!v || !v->ts)
			return 0; /* entered before we attached */

		__u64 delta = bpf_ktime_get_ns() - v->ts;
		__u32 s = slot(v->nr);
		struct syscall_stats *st = bpf_map_lookup_elem(&syscall_stats, &s);

		nr = v->nr;
		v->ts = 0;
		if (st) {
			st->time_ns += delta;
			st->hist[sidecar_hist_bucket(delta)]++;
		}
	} else {
		/* Only failures get here: their number is in orig_ax of the saved registers. */
		struct pt_regs *regs = (struct pt_regs *)ctx[0];

		nr = BPF_CORE_READ(regs, orig_ax);
	}

	if (ret < 0 && ret >= -4095) {
		__u32 s = slot(nr);
		struct syscall_error_key k = { .nr = s, .err = (__u32)(-ret) };
		__u64 *c = bpf_map_lookup_elem(&syscall_errors, &k);

		if (c) {
			*c += 1;
		} else {
			__u64 one = 1;

			if (bpf_map_update_elem(&syscall_errors, &k, &one, BPF_NOEXIST) &&
			    (c = bpf_map_lookup_elem(&syscall_errors, &k)) == NULL)
				bump_counter(SYSCALLS_LOST_ERRORS);
			else if (c)
				*c += 1; /* another CPU's insert won the race: count ours too */
		}
	}
	return 0;
}
