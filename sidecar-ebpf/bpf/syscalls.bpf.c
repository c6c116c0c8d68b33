// SPDX-License-Identifier: GPL-2.0
/* Syscall family: calls, failures by errno, time and latency per syscall, aggregated here.
 * Hooks, with latency: raw_tp sys_enter / sys_exit (raw tracepoints: no argument copying, stable
 * since 4.17). Counting only: one program per syscall, tp_btf sys_exit (the number is in the saved
 * registers), and sched_process_exit for the calls that never return (exit, exit_group). */
#include "sidecar.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* Per target (slot): see SIDECAR_SLOT_MAP. The programs are the host's (one set for every
 * sidecar); each acts only for a slot whose flags ask for its mode (SIDECAR_SLOT_SYSCALL_*). */
struct syscall_stats_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SIDECAR_SYSCALL_SLOTS);
	SIDECAR_INNER_KV(__u32, struct syscall_stats);
};
SIDECAR_SLOT_MAP(syscall_stats, struct syscall_stats_map);

/* Not preallocated: a slot pays for the (syscall, errno) pairs its target meets. */
struct syscall_errors_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	SIDECAR_INNER_KV(struct syscall_error_key, __u64);
};
SIDECAR_SLOT_MAP(syscall_errors, struct syscall_errors_map);

/* Calls a seccomp filter refused (latency mode): an exit without its entry, by syscall and errno
 * (errno 0: the filter or a supervisor answered the call with a value). A slot counting only has
 * none. */
struct syscall_denied_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	SIDECAR_INNER_KV(struct syscall_error_key, __u64);
};
SIDECAR_SLOT_MAP(syscall_denied, struct syscall_denied_map);

struct syscalls_counters_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SYSCALLS_COUNTERS);
	SIDECAR_INNER_KV(__u32, __u64);
};
SIDECAR_SLOT_MAP(syscalls_counters, struct syscalls_counters_map);

struct start {
	__u64 ts;     /* entry time; UNTIMED: entered, not timed (sampled out); 0: no call in flight */
	__u32 nr;     /* syscall slot (nr_slot) */
	__u32 owner;  /* id of the syscall_stats map it was written for (map_id) */
	__u32 skip;   /* sampling: calls to leave untimed before the next timed one */
	__u32 weight; /* sampling: calls the timed one in flight stands for */
};

/* A call in flight whose latency is not sampled: its exit still counts its error, and an exit
 * without any entry is still a refused call. No clock reads a time this small. */
#define UNTIMED 1

/* The call in flight, per thread: task-local storage lives in the task itself, so no hash lookup,
 * no table to fill up, and nothing to clean when the thread dies. One map for every slot (a
 * thread is in one target); what it holds is this target's only if `owner` says so. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct start);
} syscall_start SEC(".maps");

static __always_inline void bump_counter(__u32 slot, __u32 idx)
{
	void *m = sidecar_slot_map(&syscalls_counters, slot);
	__u64 *c = m ? bpf_map_lookup_elem(m, &idx) : NULL;

	if (c)
		*c += 1;
}

static __always_inline __u32 nr_slot(__u64 nr)
{
	return nr < SIDECAR_SYSCALL_SLOTS ? (__u32)nr : SIDECAR_SYSCALL_SLOTS - 1;
}

/* The id of a slot's inner map: each sidecar makes its own, and the kernel hands out map ids in
 * turn up to 2^31, so it tells this target's sidecar from whoever held the slot before. (Reading
 * a map's fields needs CAP_PERFMON, which these tracing programs need anyway.) */
static __always_inline __u32 map_id(void *m)
{
	return ((struct bpf_map *)m)->id;
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

static __always_inline void count_call(void *stats, __u64 nr)
{
	__u32 s = nr_slot(nr);
	struct syscall_stats *st = bpf_map_lookup_elem(stats, &s);

	if (st)
		st->calls++;
}

/* Other families' raw handlers for the target's syscalls (security's at entry, net's at exit),
 * jumped to at the end of the two programs below instead of each family putting one more
 * callback on the sys_enter/sys_exit tracepoints: that costs every syscall of the host ~40 ns
 * (sidecar/src/probes/dispatch.rs fills them). An empty slot makes the tail call fall through.
 * Shared by every slot: the jump comes for any target's task, whatever its syscalls mode, and
 * the handler finds the slot again. */
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

/* `shift`: time about 1 call in 2^shift (SIDECAR_SLOT_SYSCALL_SAMPLE_*). */
static __always_inline void start_call(__u32 slot, __u64 nr, __u32 shift)
{
	void *stats = sidecar_slot_map(&syscall_stats, slot);

	if (!stats)
		return; /* the slot's sidecar has no syscalls family */
	count_call(stats, nr);

	struct start *v = bpf_task_storage_get(&syscall_start, bpf_get_current_task_btf(), 0,
					       BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (!v) {
		bump_counter(slot, SYSCALLS_LOST_STARTS);
		return;
	}
	v->nr = nr_slot(nr);
	v->owner = map_id(stats);
	if (!shift) {
		v->weight = 1;
		v->skip = 0;
	} else if (v->skip) {
		v->skip--;
		v->ts = UNTIMED;
		return;
	} else {
		/* The gap to the next timed call is random, uniform in [1, 2N-1] (mean N): a fixed
		 * 1-in-N would time the same call of a loop of N calls every time. The random draw
		 * is paid once per timed call, the decrement above by the others. */
		__u32 n = 1U << (shift & 7);

		v->weight = n;
		v->skip = bpf_get_prandom_u32() % (2 * n - 1);
	}
	v->ts = bpf_ktime_get_ns();
}

/* raw_tp args: ctx[0] = struct pt_regs *, ctx[1] = syscall number. Attached once a slot asks for
 * latency (two clock reads and two task-storage lookups per call); counts for those slots only,
 * and jumps to the other families' handler for every slot. */
SEC("raw_tp/sys_enter")
int sys_enter(unsigned long long *ctx)
{
	int slot = sidecar_slot();

	if (slot < 0)
		return 0;

	struct sidecar_target *t = sidecar_slot_config(slot);

	if (t && (t->flags & SIDECAR_SLOT_SYSCALL_LATENCY))
		start_call(slot, ctx[1],
			   (t->flags & SIDECAR_SLOT_SYSCALL_SAMPLE_MASK) >> SIDECAR_SLOT_SYSCALL_SAMPLE_SHIFT);
	bpf_tail_call(ctx, &syscall_hooks_enter, 0);
	return 0;
}

static __always_inline void count_error(__u32 slot, __u64 nr, long ret)
{
	if (ret < 0 && ret >= -4095) {
		void *errors = sidecar_slot_map(&syscall_errors, slot);
		struct syscall_error_key k = { .nr = nr_slot(nr), .err = (__u32)(-ret) };

		if (!errors)
			return;

		__u64 *c = bpf_map_lookup_elem(errors, &k);

		if (c) {
			*c += 1;
		} else {
			__u64 one = 1;

			if (bpf_map_update_elem(errors, &k, &one, BPF_NOEXIST) &&
			    (c = bpf_map_lookup_elem(errors, &k)) == NULL)
				bump_counter(slot, SYSCALLS_LOST_ERRORS);
			else if (c)
				*c += 1; /* another CPU's insert won the race: count ours too */
		}
	}
}

/* A seccomp filter that refuses a call (errno, trap, a supervisor's answer) makes the kernel skip
 * it before the sys_enter tracepoint, but the task still leaves through sys_exit. So an exit
 * without an entry, on a thread whose entries we do see, is a refused call. A thread we never saw
 * enter has no storage: its first exit may be a call it entered before we attached. */
static __always_inline void count_denied(__u32 slot, struct pt_regs *regs, long ret)
{
	void *denied = sidecar_slot_map(&syscall_denied, slot);
	long nr = BPF_CORE_READ(regs, orig_ax);

	if (nr < 0 || !denied)
		return;
	/* Killed by the filter (SECCOMP_RET_KILL_*): the security family counts it as a kill. */
	if (bpf_get_current_task_btf()->seccomp.mode == 3 /* SECCOMP_MODE_DEAD */)
		return;
	struct syscall_error_key k = {
		.nr = nr_slot(nr),
		.err = ret < 0 && ret >= -4095 ? (__u32)(-ret) : 0,
	};
	if (!sidecar_hash_inc(denied, &k))
		bump_counter(slot, SYSCALLS_LOST_DENIED);
}

static __always_inline void end_call(__u32 slot, struct pt_regs *regs, long ret)
{
	struct start *v = bpf_task_storage_get(&syscall_start, bpf_get_current_task_btf(), 0, 0);
	void *stats;
	__u32 owner;

	if (!v)
		return; /* never seen entering: entered before we attached */
	stats = sidecar_slot_map(&syscall_stats, slot);
	if (!stats)
		return;
	owner = map_id(stats);
	if (v->owner != owner) {
		/* Written for another target: the thread moved here, or this slot changed hands
		 * while nobody watched it. The call that ends is not one we saw enter; from now on
		 * its entries are seen, so the next exit without one is a refused call. */
		v->owner = owner;
		v->ts = 0;
		return;
	}
	if (!v->ts) {
		count_denied(slot, regs, ret);
		return;
	}

	__u32 s = v->nr;

	if (v->ts == UNTIMED) {
		v->ts = 0;
		count_error(slot, s, ret);
		return;
	}

	__u64 delta = bpf_ktime_get_ns() - v->ts;
	__u64 w = v->weight ? v->weight : 1;
	struct syscall_stats *st = bpf_map_lookup_elem(stats, &s);

	v->ts = 0;
	if (st) {
		st->time_ns += delta * w;
		st->hist[sidecar_hist_bucket(delta)] += w;
	}
	count_error(slot, s, ret);
}

/* raw_tp args: ctx[0] = struct pt_regs *, ctx[1] = return value. As sys_enter: latency slots
 * only, the jump for every slot. */
SEC("raw_tp/sys_exit")
int sys_exit(unsigned long long *ctx)
{
	/* The filter first, although only the target's threads carry the start: its plain loads
	 * cost every other task of the host less than the helper call. */
	int slot = sidecar_slot();

	if (slot < 0)
		return 0;
	if (sidecar_slot_wants(slot, SIDECAR_SLOT_SYSCALL_LATENCY))
		end_call(slot, (struct pt_regs *)ctx[0], (long)ctx[1]);
	bpf_tail_call(ctx, &syscall_hooks_exit, 0);
	return 0;
}

/* Counting only: the whole family in one program per syscall, for the slots that ask for it (on a
 * shared set it may run beside the two above, each for its own slots). tp_btf gives the saved
 * registers as a typed pointer, read with plain loads. */
SEC("tp_btf/sys_exit")
int BPF_PROG(sys_exit_count, struct pt_regs *regs, long ret)
{
	int slot = sidecar_slot();
	void *stats;

	if (slot < 0 || !sidecar_slot_wants(slot, SIDECAR_SLOT_SYSCALL_COUNTING))
		return 0;
	stats = sidecar_slot_map(&syscall_stats, slot);
	if (!stats)
		return 0;

	long nr = regs->orig_ax;

	if (nr < 0)
		nr = NR_RT_SIGRETURN;
	/* A new task leaves the kernel through sys_exit too (ret_from_fork), with its parent's
	 * registers copied: clone/fork/vfork/clone3 returning 0 is that child, not a second call. */
	if (ret == 0 && (nr == NR_CLONE || nr == NR_CLONE3 || nr == NR_FORK || nr == NR_VFORK))
		return 0;
	count_call(stats, nr);
	count_error(slot, nr, ret);
	return 0;
}

/* exit and exit_group never reach sys_exit: the thread that made one dies in it, with its number
 * still in orig_ax. (Threads an exit_group takes along left their own calls through sys_exit.)
 * A thread a signal kills can die from an interrupt or fault frame, whose orig_ax slot holds a
 * vector or an error code: its exit code names the signal, an exit's never does. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(sys_thread_exit, struct task_struct *p)
{
	int slot = sidecar_task_slot(p);
	void *stats;

	if (slot < 0 || (p->exit_code & 0x7f) ||
	    !sidecar_slot_wants(slot, SIDECAR_SLOT_SYSCALL_COUNTING))
		return 0;
	stats = sidecar_slot_map(&syscall_stats, slot);
	if (!stats)
		return 0;

	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(p);
	long nr = regs ? regs->orig_ax : -1;

	if (nr == NR_EXIT || nr == NR_EXIT_GROUP)
		count_call(stats, nr);
	return 0;
}
