// SPDX-License-Identifier: GPL-2.0
/* Syscall family: calls, failures by errno, time and latency per syscall, aggregated here.
 * Hooks, with latency: raw_tp sys_enter / sys_exit (raw tracepoints: no argument copying, stable
 * since 4.17). Counting only: one program per syscall, tp_btf sys_exit (the number is in the saved
 * registers), and sched_process_exit for the calls that never return (exit, exit_group). */
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

/* Calls a seccomp filter refused (latency mode): an exit without its entry, by syscall and errno
 * (errno 0: the filter or a supervisor answered the call with a value). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct syscall_error_key);
	__type(value, __u64);
} syscall_denied SEC(".maps");

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

/* rt_sigreturn restores the registers from the signal frame with orig_ax = -1 ("no syscall
 * to restart"): at its exit that is the only call whose number reads negative. */
#define NR_RT_SIGRETURN 15
#define NR_EXIT 60
#define NR_EXIT_GROUP 231
#define NR_CLONE 56
#define NR_FORK 57
#define NR_VFORK 58
#define NR_CLONE3 435

static __always_inline void count_call(__u64 nr)
{
	__u32 s = slot(nr);
	struct syscall_stats *st = bpf_map_lookup_elem(&syscall_stats, &s);

	if (st)
		st->calls++;
}

/* Other families' raw handlers for the target's syscalls (security's at entry, net's at exit),
 * jumped to at the end of the two programs below instead of each family putting one more
 * callback on the sys_enter/sys_exit tracepoints: that costs every syscall of the host ~40 ns
 * (sidecar/src/probes/dispatch.rs fills them). An empty slot makes the tail call fall through. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} syscall_hooks_enter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} syscall_hooks_exit SEC(".maps");

static __always_inline void start_call(__u64 nr)
{
	count_call(nr);

	struct start *v = bpf_task_storage_get(&syscall_start, bpf_get_current_task_btf(), 0,
					       BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (!v) {
		bump_counter(SYSCALLS_LOST_STARTS);
		return;
	}
	v->ts = bpf_ktime_get_ns();
	v->nr = nr;
}

/* raw_tp args: ctx[0] = struct pt_regs *, ctx[1] = syscall number. With latency only (two clock
 * reads and two task-storage lookups per call). */
SEC("raw_tp/sys_enter")
int sys_enter(unsigned long long *ctx)
{
	if (!sidecar_in_target())
		return 0;
	start_call(ctx[1]);
	bpf_tail_call(ctx, &syscall_hooks_enter, 0);
	return 0;
}

static __always_inline void count_error(__u64 nr, long ret)
{
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
}

/* A seccomp filter that refuses a call (errno, trap, a supervisor's answer) makes the kernel skip
 * it before the sys_enter tracepoint, but the task still leaves through sys_exit. So an exit
 * without an entry, on a thread whose entries we do see, is a refused call. A thread we never saw
 * enter has no storage: its first exit may be a call it entered before we attached. */
static __always_inline void count_denied(struct pt_regs *regs, long ret)
{
	long nr = BPF_CORE_READ(regs, orig_ax);

	if (nr < 0)
		return;
	struct syscall_error_key k = {
		.nr = slot(nr),
		.err = ret < 0 && ret >= -4095 ? (__u32)(-ret) : 0,
	};
	if (!sidecar_hash_inc(&syscall_denied, &k))
		bump_counter(SYSCALLS_LOST_DENIED);
}

static __always_inline void end_call(struct pt_regs *regs, long ret)
{
	struct start *v = bpf_task_storage_get(&syscall_start, bpf_get_current_task_btf(), 0, 0);

	if (!v)
		return; /* never seen entering: entered before we attached */
	if (!v->ts) {
		count_denied(regs, ret);
		return;
	}

	__u64 delta = bpf_ktime_get_ns() - v->ts;
	__u32 s = slot(v->nr);
	struct syscall_stats *st = bpf_map_lookup_elem(&syscall_stats, &s);

	v->ts = 0;
	if (st) {
		st->time_ns += delta;
		st->hist[sidecar_hist_bucket(delta)]++;
	}
	count_error(v->nr, ret);
}

/* raw_tp args: ctx[0] = struct pt_regs *, ctx[1] = return value. With latency only. */
SEC("raw_tp/sys_exit")
int sys_exit(unsigned long long *ctx)
{
	/* The filter first, although only the target's threads carry the start: its plain loads
	 * cost every other task of the host less than the helper call. */
	if (!sidecar_in_target())
		return 0;
	end_call((struct pt_regs *)ctx[0], (long)ctx[1]);
	bpf_tail_call(ctx, &syscall_hooks_exit, 0);
	return 0;
}

/* Counting only: the whole family in one program per syscall. tp_btf gives the saved registers
 * as a typed pointer, read with plain loads. */
SEC("tp_btf/sys_exit")
int BPF_PROG(sys_exit_count, struct pt_regs *regs, long ret)
{
	if (!sidecar_in_target())
		return 0;

	long nr = regs->orig_ax;

	if (nr < 0)
		nr = NR_RT_SIGRETURN;
	/* A new task leaves the kernel through sys_exit too (ret_from_fork), with its parent's
	 * registers copied: clone/fork/vfork/clone3 returning 0 is that child, not a second call. */
	if (ret == 0 && (nr == NR_CLONE || nr == NR_CLONE3 || nr == NR_FORK || nr == NR_VFORK))
		return 0;
	count_call(nr);
	count_error(nr, ret);
	return 0;
}

/* exit and exit_group never reach sys_exit: the thread that made one dies in it, with its number
 * still in orig_ax. (Threads an exit_group takes along left their own calls through sys_exit.)
 * A thread a signal kills can die from an interrupt or fault frame, whose orig_ax slot holds a
 * vector or an error code: its exit code names the signal, an exit's never does. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(sys_thread_exit, struct task_struct *p)
{
	if (!sidecar_task_in_target(p) || (p->exit_code & 0x7f))
		return 0;

	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(p);
	long nr = regs ? regs->orig_ax : -1;

	if (nr == NR_EXIT || nr == NR_EXIT_GROUP)
		count_call(nr);
	return 0;
}
