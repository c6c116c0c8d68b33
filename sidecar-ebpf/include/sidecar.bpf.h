/* Included first thing by every probe family: the target filter. Userspace writes the single
 * entry of `sidecar_target` (and rewrites it when the target restarts in a new cgroup). */
#ifndef SIDECAR_BPF_H
#define SIDECAR_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include "sidecar.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sidecar_target);
} sidecar_target SEC(".maps");

/* --target-tree: the tgids of a process and its descendants. Userspace puts the tree as it is at
 * start; the two programs at the end of this file follow forks and frees. The value is the
 * process's start time (0 when put by userspace), so the free of a recycled tgid's previous
 * owner cannot remove a new member. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SIDECAR_TREE_MAX);
	__type(key, __u32);
	__type(value, __u64);
} sidecar_tree SEC(".maps");

static __always_inline int sidecar_tree_has(__u32 tgid)
{
	return bpf_map_lookup_elem(&sidecar_tree, &tgid) != NULL;
}

static __always_inline int sidecar_in_target(void)
{
	__u32 zero = 0;
	struct sidecar_target *t = bpf_map_lookup_elem(&sidecar_target, &zero);

	if (!t)
		return 0;
	if (t->mode == SIDECAR_FILTER_CGROUP) {
		/* What bpf_get_current_cgroup_id() returns, read with plain loads: this runs on every
		 * syscall of every process on the host, and a helper call costs more than the walk. */
		struct task_struct *task = bpf_get_current_task_btf();

		return task->cgroups->dfl_cgrp->kn->id == t->cgroup_id;
	}
	if (t->mode == SIDECAR_FILTER_PIDNS) {
		struct bpf_pidns_info ns = {};

		if (bpf_get_ns_current_pid_tgid(t->pidns_dev, t->pidns_ino, &ns, sizeof(ns)))
			return 0;
		return ns.tgid != t->self_tgid;
	}
	if (t->mode == SIDECAR_FILTER_TREE)
		return sidecar_tree_has(bpf_get_current_pid_tgid() >> 32);
	return 0;
}

/* Contexts of the per-syscall tracepoints (tracepoint/syscalls/sys_enter_<name>, sys_exit_<name>):
 * common header (8 bytes), __syscall_nr (int, padded to 8), then the arguments or the return value.
 * Families that care about a handful of syscalls attach to those instead of raw sys_enter/sys_exit:
 * the kernel tests the syscall number against a bitmap before running anything, so the host's other
 * syscalls pay no BPF program. */
struct sidecar_sys_enter {
	__u64 common;
	__s32 nr;
	__u32 _pad;
	__u64 args[6];
};

struct sidecar_sys_exit {
	__u64 common;
	__s32 nr;
	__u32 _pad;
	__s64 ret;
};

/* Whether `task` (not necessarily the current one: scheduler hooks see two tasks) belongs to the
 * target. Pid-namespace mode compares the task's innermost pid namespace. */
static __always_inline int sidecar_task_in_target(struct task_struct *task)
{
	__u32 zero = 0;
	struct sidecar_target *t = bpf_map_lookup_elem(&sidecar_target, &zero);

	if (!t || !task)
		return 0;
	if (t->mode == SIDECAR_FILTER_CGROUP)
		return task->cgroups->dfl_cgrp->kn->id == t->cgroup_id;
	if (t->mode == SIDECAR_FILTER_PIDNS) {
		struct pid *p = task->thread_pid;
		unsigned int level = p->level;
		struct upid up = {};

		bpf_probe_read_kernel(&up, sizeof(up), &p->numbers[level & 7]);
		if (BPF_CORE_READ(up.ns, ns.inum) != t->pidns_ino)
			return 0;
		return task->tgid != 0 && up.nr != 0 && !(task->pid == task->tgid && up.nr == t->self_tgid);
	}
	if (t->mode == SIDECAR_FILTER_TREE)
		return sidecar_tree_has(task->tgid);
	return 0;
}

/* +1 on the u64 value of `key` in a hash map shared by all CPUs: several may insert the same key
 * at once, so add atomically and look again when our insert loses. Returns 0 when the key could
 * not be stored (map full): callers count those in an overflow total. */
static __always_inline int sidecar_hash_inc(void *map, const void *key)
{
	__u64 one = 1, *c = bpf_map_lookup_elem(map, key);

	if (c) {
		__sync_fetch_and_add(c, 1);
		return 1;
	}
	if (!bpf_map_update_elem(map, key, &one, BPF_NOEXIST))
		return 1;
	c = bpf_map_lookup_elem(map, key);
	if (c) {
		__sync_fetch_and_add(c, 1);
		return 1;
	}
	return 0;
}

/* Index of the log2 bucket for a duration in ns (0 for 0 and 1). */
static __always_inline __u32 sidecar_log2(__u64 v)
{
	__u32 r = 0, shift;

	shift = (v > 0xFFFFFFFFULL) << 5; v >>= shift; r |= shift;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r;
}

static __always_inline __u32 sidecar_hist_bucket(__u64 ns)
{
	__u32 b = sidecar_log2(ns);

	return b < SIDECAR_HIST_BUCKETS ? b : SIDECAR_HIST_BUCKETS - 1;
}

/* --target-tree: a new process of a member joins; attached only in that mode. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(sidecar_tree_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = parent->tgid, ctgid = child->tgid;
	__u64 start = child->start_time;

	if (ptgid != ctgid && sidecar_tree_has(ptgid))
		bpf_map_update_elem(&sidecar_tree, &ctgid, &start, BPF_ANY);
	return 0;
}

/* A process leaves when its leader's task is freed: after its last switch and after its parent
 * reaped it, so nothing it did is missed; its tgid can be reused only from then on. */
SEC("tp_btf/sched_process_free")
int BPF_PROG(sidecar_tree_free, struct task_struct *p)
{
	__u32 tgid = p->tgid;
	__u64 *v;

	if (p->pid != tgid)
		return 0;
	v = bpf_map_lookup_elem(&sidecar_tree, &tgid);
	if (v && (*v == 0 || *v == p->start_time))
		bpf_map_delete_elem(&sidecar_tree, &tgid);
	return 0;
}

#endif
