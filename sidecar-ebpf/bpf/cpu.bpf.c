// SPDX-License-Identifier: GPL-2.0
/* CPU family: on-CPU time by comm and slice length (cpudist), run-queue latency (runqlat),
 * off-CPU time by state, context switches, migrations. Hooks: tp_btf sched_switch,
 * sched_wakeup, sched_wakeup_new, sched_migrate_task. The scheduler runs them for two tasks at
 * once, so the target is checked on each task, not on `current`. */
#include "sidecar.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define TASK_INTERRUPTIBLE 0x1
#define TASK_UNINTERRUPTIBLE 0x2
#define TASK_DEAD 0x80

struct task_times {
	__u64 off_ts;   /* switched out while sleeping/blocked */
	__u64 ready_ts; /* woken up or preempted: waiting for a CPU */
	__u32 off_state;
	__u32 seen;     /* nvcsw holds the task's count at its last switch-out */
	__u64 nvcsw;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_times);
} cpu_task SEC(".maps");

/* When the task now on this CPU was switched in, whatever task it is. A task can join the target
 * while it runs (`run` moves its child into the target cgroup, then it execs): a switch-in
 * stamp kept only for target tasks would miss that whole first slice, up to seconds for a
 * spinner on an idle CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} cpu_slice_start SEC(".maps");

/* Per target (slot), see SIDECAR_SLOT_MAP: the task a hook is about decides the slot. */
struct cpu_hists_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CPU_HISTS);
	SIDECAR_INNER_KV(__u32, struct cpu_hist_val);
};
SIDECAR_SLOT_MAP(cpu_hists, struct cpu_hists_map);

struct cpu_counters_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CPU_COUNTERS);
	SIDECAR_INNER_KV(__u32, __u64);
};
SIDECAR_SLOT_MAP(cpu_counters, struct cpu_counters_map);

/* On-CPU nanoseconds by comm; comms beyond the table are added to cpu_other_ns. */
struct cpu_comm_ns_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	SIDECAR_INNER_KV(struct comm_key, __u64);
};
SIDECAR_SLOT_MAP(cpu_comm_ns, struct cpu_comm_ns_map);

struct cpu_other_ns_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	SIDECAR_INNER_KV(__u32, __u64);
};
SIDECAR_SLOT_MAP(cpu_other_ns, struct cpu_other_ns_map);

/* The slot of `t` when that slot counts cpu (its sidecar runs the family), else -1: tasks of
 * other slots get no task storage either. */
static __always_inline int cpu_slot(struct task_struct *t)
{
	int slot = sidecar_task_slot(t);

	return slot >= 0 && sidecar_slot_map(&cpu_counters, slot) ? slot : -1;
}

static __always_inline void observe(__u32 slot, __u32 h, __u64 ns)
{
	void *m = sidecar_slot_map(&cpu_hists, slot);
	struct cpu_hist_val *v = m ? bpf_map_lookup_elem(m, &h) : NULL;

	if (v) {
		v->sum_ns += ns;
		v->hist[sidecar_hist_bucket(ns)]++;
	}
}

static __always_inline void bump(__u32 slot, __u32 idx)
{
	void *m = sidecar_slot_map(&cpu_counters, slot);
	__u64 *c = m ? bpf_map_lookup_elem(m, &idx) : NULL;

	if (c)
		*c += 1;
}

static __always_inline void add_comm_ns(__u32 slot, struct task_struct *t, __u64 ns)
{
	void *comms = sidecar_slot_map(&cpu_comm_ns, slot);
	struct comm_key k;

	if (!comms)
		return;
	/* Two plain loads instead of a helper call: comm is written with strscpy_pad, so the bytes
	 * after the NUL are zero and the key is stable. */
	const __u64 *c = (const __u64 *)t->group_leader->comm;

	__builtin_memcpy(k.comm, &(__u64[2]){ c[0], c[1] }, sizeof(k.comm));
	__u64 *v = bpf_map_lookup_elem(comms, &k);

	if (v) {
		*v += ns;
		return;
	}
	if (!bpf_map_update_elem(comms, &k, &ns, BPF_NOEXIST))
		return;
	v = bpf_map_lookup_elem(comms, &k);
	if (v) {
		*v += ns;
		return;
	}
	__u32 zero = 0;
	void *other = sidecar_slot_map(&cpu_other_ns, slot);
	__u64 *o = other ? bpf_map_lookup_elem(other, &zero) : NULL;

	if (o)
		*o += ns;
	bump(slot, CPU_LOST_COMMS);
}

/* Voluntary or involuntary as the kernel counts it in the task's nvcsw/nivcsw (getrusage,
 * /proc/<pid>/status): __schedule() has added one to either just before this tracepoint. The
 * traced state cannot tell alone: a sleep aborted by a pending signal is traced as TASK_RUNNING
 * but counted voluntary, and a task's final switch (TASK_DEAD) is voluntary too. So the task's
 * own counter decides; the state rule only serves a task's first switch since we attached. */
static __always_inline __u32 switch_kind(struct task_times *tt, struct task_struct *prev,
					 bool preempt, unsigned int prev_state)
{
	__u64 nv = prev->nvcsw;
	int voluntary;

	if (tt->seen)
		voluntary = nv != tt->nvcsw;
	else if (nv + prev->nivcsw == 1)
		voluntary = nv == 1; /* a new task's first switch */
	else
		voluntary = !preempt && prev_state;
	tt->nvcsw = nv;
	tt->seen = 1;
	return voluntary ? CPU_SWITCH_VOLUNTARY : CPU_SWITCH_INVOLUNTARY;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(cpu_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	__u64 now = bpf_ktime_get_ns(), began = 0;
	__u32 zero = 0;
	__u64 *start = bpf_map_lookup_elem(&cpu_slice_start, &zero);
	/* The two tasks may belong to two targets: each is counted in its own slot's maps. */
	int ps = cpu_slot(prev), ns = cpu_slot(next);

	if (start) {
		began = *start;
		*start = now;
	}
	if (ps >= 0) {
		/* 0: the first switch on this CPU since attach, its slice began before we looked. */
		if (began) {
			observe(ps, CPU_HIST_SLICE, now - began);
			add_comm_ns(ps, prev, now - began);
		}
		struct task_times *tt = bpf_task_storage_get(&cpu_task, prev, 0,
							     BPF_LOCAL_STORAGE_GET_F_CREATE);

		if (tt) {
			__u32 state = prev_state & (TASK_INTERRUPTIBLE | TASK_UNINTERRUPTIBLE);

			if (prev_state & TASK_DEAD) {
				/* its last switch: nothing to wait for */
			} else if (state) {
				tt->off_ts = now;
				tt->off_state = state;
				tt->ready_ts = 0;
			} else {
				/* preempted: still runnable, waiting in the run queue */
				tt->off_ts = 0;
				tt->ready_ts = now;
			}
			bump(ps, switch_kind(tt, prev, preempt, prev_state));
		}
	}
	if (ns >= 0) {
		struct task_times *tt = bpf_task_storage_get(&cpu_task, next, 0,
							     BPF_LOCAL_STORAGE_GET_F_CREATE);

		if (tt) {
			if (tt->off_ts) {
				observe(ns,
					tt->off_state & TASK_UNINTERRUPTIBLE ? CPU_HIST_OFF_BLOCKED
									     : CPU_HIST_OFF_SLEEPING,
					now - tt->off_ts);
				tt->off_ts = 0;
			}
			if (tt->ready_ts) {
				observe(ns, CPU_HIST_RUNQUEUE, now - tt->ready_ts);
				tt->ready_ts = 0;
			}
		}
	}
	return 0;
}

/* A dying thread's last slice would only be counted at its final switch, which can come after
 * its parent has been told it exited: count it here, before exit_notify(). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(cpu_exit, struct task_struct *p)
{
	int slot = cpu_slot(p);

	if (slot < 0)
		return 0;

	/* p is current: its slice began at this CPU's last switch. The final switch counts only
	 * what runs after this. */
	__u32 zero = 0;
	__u64 *start = bpf_map_lookup_elem(&cpu_slice_start, &zero);

	if (start && *start) {
		__u64 now = bpf_ktime_get_ns(), d = now - *start;

		observe(slot, CPU_HIST_SLICE, d);
		add_comm_ns(slot, p, d);
		*start = now;
	}
	return 0;
}

static __always_inline int wakeup(struct task_struct *p)
{
	if (cpu_slot(p) < 0)
		return 0;

	struct task_times *tt = bpf_task_storage_get(&cpu_task, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (tt)
		tt->ready_ts = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(cpu_wakeup, struct task_struct *p)
{
	return wakeup(p);
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(cpu_wakeup_new, struct task_struct *p)
{
	return wakeup(p);
}

SEC("tp_btf/sched_migrate_task")
int BPF_PROG(cpu_migrate, struct task_struct *p, int dest_cpu)
{
	int slot = cpu_slot(p);

	if (slot >= 0)
		bump(slot, CPU_MIGRATIONS);
	return 0;
}
