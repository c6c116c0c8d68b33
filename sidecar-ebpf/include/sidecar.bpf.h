/* Included first thing by every probe family: which target (slot) a task belongs to. Userspace
 * writes its slot's entry of `sidecar_slots` and its cgroup's place in `sidecar_cgroups` (and
 * rewrites them when the target restarts in a new cgroup). */
#ifndef SIDECAR_BPF_H
#define SIDECAR_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include "sidecar.h"

/* The targets of this kernel side, by slot. On a shared kernel side (/sys/fs/bpf/ebpf-sidecar/)
 * these maps are pinned and common to every family's object and every sidecar; each sidecar
 * writes its own slot. A private kernel side has one target, in slot 0. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SIDECAR_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct sidecar_target);
} sidecar_slots SEC(".maps");

/* cgroup v2 id -> slot, open addressing (see SIDECAR_CGROUP_TABLE). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SIDECAR_CGROUP_TABLE);
	__type(key, __u32);
	__type(value, struct sidecar_cgroup_entry);
} sidecar_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sidecar_modes);
} sidecar_modes SEC(".maps");

/* --target-tree: the tgids of a process and its descendants, with their slot. Userspace puts the
 * tree as it is at start; the two programs at the end of this file follow forks and frees. The
 * start time (0 when put by userspace) keeps the free of a recycled tgid's previous owner from
 * removing a new member. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SIDECAR_TREE_MAX);
	__type(key, __u32);
	__type(value, struct sidecar_tree_entry);
} sidecar_tree SEC(".maps");

/* A per-target map: an array of maps indexed by slot, whose inner maps (declared by `inner`, a
 * struct like a map definition without SEC) each sidecar creates for its own slot, sized for its
 * options, or not at all when an option is off (the lookup then gives NULL).
 *
 * An inner definition gives its key and value with SIDECAR_INNER_KV, not __type: clang emits
 * only a forward declaration for a struct reached through a pointer outside `.maps` variables,
 * and a loader cannot size a forward declaration. */
#define SIDECAR_INNER_KV(k, v)                                                                     \
	__uint(key_size, sizeof(k));                                                               \
	__uint(value_size, sizeof(v))

#define SIDECAR_SLOT_MAP(name, inner)                                                              \
	struct {                                                                                   \
		__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);                                          \
		__uint(max_entries, SIDECAR_MAX_SLOTS);                                            \
		__type(key, __u32);                                                                \
		__array(values, inner);                                                            \
	} name SEC(".maps")

/* The inner map of `outer` for `slot` (NULL: the slot has none). */
static __always_inline void *sidecar_slot_map(void *outer, __u32 slot)
{
	return bpf_map_lookup_elem(outer, &slot);
}

static __always_inline __u32 sidecar_cgroup_hash(__u64 id)
{
	return (__u32)((id * 0x9E3779B97F4A7C15ULL) >> 40) & (SIDECAR_CGROUP_TABLE - 1);
}

/* The slot of cgroup `id`, or -1. Array lookups are inlined by the verifier: for the host's
 * other processes (an empty place at their hash, usually the first) this is a few loads. */
static __always_inline int sidecar_cgroup_slot(__u64 id)
{
	__u32 h = sidecar_cgroup_hash(id);

#pragma unroll
	for (int i = 0; i < SIDECAR_CGROUP_PROBES; i++) {
		__u32 idx = (h + i) & (SIDECAR_CGROUP_TABLE - 1);
		struct sidecar_cgroup_entry *e = bpf_map_lookup_elem(&sidecar_cgroups, &idx);

		if (!e || e->cgroup_id == 0)
			return -1;
		if (e->cgroup_id == id)
			return e->slot < SIDECAR_MAX_SLOTS ? (int)e->slot : -1;
	}
	return -1;
}

static __always_inline int sidecar_tree_slot(__u32 tgid)
{
	struct sidecar_tree_entry *t = bpf_map_lookup_elem(&sidecar_tree, &tgid);

	return t && t->slot < SIDECAR_MAX_SLOTS ? (int)t->slot : -1;
}

static __always_inline struct sidecar_modes *sidecar_get_modes(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&sidecar_modes, &zero);
}

static __always_inline struct sidecar_target *sidecar_slot_config(__u32 slot)
{
	return bpf_map_lookup_elem(&sidecar_slots, &slot);
}

/* Whether slot `slot` asked for option `flag` (SIDECAR_SLOT_*). */
static __always_inline int sidecar_slot_wants(__u32 slot, __u64 flag)
{
	struct sidecar_target *t = sidecar_slot_config(slot);

	return t && (t->flags & flag);
}

/* The slot of a task in cgroup `cgroup_id` with tgid `tgid` by the cgroup table, then the
 * followed trees; -1 otherwise, with *modes set when pid-namespace slots remain to check. */
static __always_inline int sidecar_cgroup_or_tree_slot(__u64 cgroup_id, __u32 tgid,
						       struct sidecar_modes **modes)
{
	int s = sidecar_cgroup_slot(cgroup_id);
	struct sidecar_modes *m;

	if (s >= 0)
		return s;
	m = sidecar_get_modes();
	if (!m)
		return -1;
	if (m->tree_slots) {
		s = sidecar_tree_slot(tgid);
		if (s >= 0)
			return s;
	}
	*modes = m;
	return -1;
}

/* The slot the current task belongs to, or -1 (the host's other processes: leave at once). */
static __always_inline int sidecar_slot(void)
{
	/* What bpf_get_current_cgroup_id() returns, read with plain loads: this runs on every
	 * syscall of every process on the host, and a helper call costs more than the walk. */
	struct task_struct *task = bpf_get_current_task_btf();
	struct sidecar_modes *m = NULL;
	int s = sidecar_cgroup_or_tree_slot(task->cgroups->dfl_cgrp->kn->id,
					    bpf_get_current_pid_tgid() >> 32, &m);

	if (s >= 0 || !m)
		return s;
	if (m->pidns_slot) {
		__u32 slot = m->pidns_slot - 1;
		struct sidecar_target *t = sidecar_slot_config(slot);
		struct bpf_pidns_info ns = {};

		if (!t || t->mode != SIDECAR_FILTER_PIDNS)
			return -1;
		if (bpf_get_ns_current_pid_tgid(t->pidns_dev, t->pidns_ino, &ns, sizeof(ns)))
			return -1;
		return ns.tgid != t->self_tgid ? (int)slot : -1;
	}
	return -1;
}

static __always_inline int sidecar_in_target(void)
{
	return sidecar_slot() >= 0;
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

/* The slot `task` belongs to (not necessarily the current task: scheduler hooks see two), or
 * -1. Pid-namespace mode compares the task's innermost pid namespace. */
static __always_inline int sidecar_task_slot(struct task_struct *task)
{
	struct sidecar_modes *m = NULL;
	int s;

	if (!task)
		return -1;
	s = sidecar_cgroup_or_tree_slot(task->cgroups->dfl_cgrp->kn->id, task->tgid, &m);
	if (s >= 0 || !m)
		return s;
	if (m->pidns_slot) {
		__u32 slot = m->pidns_slot - 1;
		struct sidecar_target *t = sidecar_slot_config(slot);
		struct pid *p = task->thread_pid;
		unsigned int level = p->level;
		struct upid up = {};

		if (!t || t->mode != SIDECAR_FILTER_PIDNS)
			return -1;
		bpf_probe_read_kernel(&up, sizeof(up), &p->numbers[level & 7]);
		if (BPF_CORE_READ(up.ns, ns.inum) != t->pidns_ino)
			return -1;
		if (task->tgid != 0 && up.nr != 0 && !(task->pid == task->tgid && up.nr == t->self_tgid))
			return (int)slot;
	}
	return -1;
}

static __always_inline int sidecar_task_in_target(struct task_struct *task)
{
	return sidecar_task_slot(task) >= 0;
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

/* --target-tree: a new process of a member joins its slot; attached only when some slot
 * follows a tree. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(sidecar_tree_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = parent->tgid, ctgid = child->tgid;
	struct sidecar_tree_entry *p, c = {};

	if (ptgid == ctgid)
		return 0;
	p = bpf_map_lookup_elem(&sidecar_tree, &ptgid);
	if (!p)
		return 0;
	c.start = child->start_time;
	c.slot = p->slot;
	bpf_map_update_elem(&sidecar_tree, &ctgid, &c, BPF_ANY);
	return 0;
}

/* A process leaves when its leader's task is freed: after its last switch and after its parent
 * reaped it, so nothing it did is missed; its tgid can be reused only from then on. */
SEC("tp_btf/sched_process_free")
int BPF_PROG(sidecar_tree_free, struct task_struct *p)
{
	__u32 tgid = p->tgid;
	struct sidecar_tree_entry *v;

	if (p->pid != tgid)
		return 0;
	v = bpf_map_lookup_elem(&sidecar_tree, &tgid);
	if (v && (v->start == 0 || v->start == p->start_time))
		bpf_map_delete_elem(&sidecar_tree, &tgid);
	return 0;
}

#endif
