// SPDX-License-Identifier: GPL-2.0
/* Syscall family: calls, failures by errno, time and latency per syscall, aggregated here.
 * Hooks: raw_tp sys_enter / sys_exit (raw tracepoints: no argument copying, stable since 4.17),
 * and sched_process_exit to forget threads that leave in the middle of a syscall (exit_group). */
#include "sidecar.bpf.h"

char LICENSE[] SEC("license") = "GPL";

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

/* Calls in flight, by thread id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, __u32);
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

	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct start v = { .ts = bpf_ktime_get_ns(), .nr = nr };

	if (bpf_map_update_elem(&syscall_start, &tid, &v, BPF_ANY))
		bump_counter(SYSCALLS_LOST_STARTS);
	return 0;
}

/* raw_tp args: ctx[0] = struct pt_regs *, ctx[1] = return value */
SEC("raw_tp/sys_exit")
int sys_exit(unsigned long long *ctx)
{
	if (!sidecar_in_target())
		return 0;

	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct start *v = bpf_map_lookup_elem(&syscall_start, &tid);

	if (!v)
		return 0; /* entered before we attached */

	__u64 now = bpf_ktime_get_ns();
	__u64 delta = now - v->ts;
	__u64 nr = v->nr;
	long ret = (long)ctx[1];

	bpf_map_delete_elem(&syscall_start, &tid);

	__u32 s = slot(nr);
	struct syscall_stats *st = bpf_map_lookup_elem(&syscall_stats, &s);

	if (st) {
		st->time_ns += delta;
		st->hist[sidecar_hist_bucket(delta)]++;
	}

	if (ret < 0 && ret >= -4095) {
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

/* A thread that dies inside a syscall (exit, exit_group, fatal signal) never reaches sys_exit. */
SEC("raw_tp/sched_process_exit")
int syscalls_task_exit(unsigned long long *ctx)
{
	if (!sidecar_in_target())
		return 0;

	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	bpf_map_delete_elem(&syscall_start, &tid);
	return 0;
}
