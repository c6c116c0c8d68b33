// SPDX-License-Identifier: GPL-2.0
/* Every exec in the target as an event: pid, parent, uid, comm, filename (ring buffer → /events). */
#include "sidecar.bpf.h"

struct exec_event {
	__u32 pid;
	__u32 ppid;
	__u32 uid;
	__u32 pad;
	char comm[16];
	char filename[128];
};

/* Keeps struct exec_event in the object's BTF, where the sidecar finds the layout of the ring
 * buffer's records (clang only emits types that a global or a function signature reaches). */
struct exec_event *unused_exec_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} exec_events SEC(".maps");

/* Events that did not fit in the ring buffer (reader too slow). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} exec_lost SEC(".maps");

SEC("tracepoint/sched/sched_process_exec")
int execsnoop(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task;
	struct exec_event *e;
	__u32 zero = 0, off;
	__u64 *lost;

	if (!sidecar_in_target())
		return 0;
	e = bpf_ringbuf_reserve(&exec_events, sizeof(*e), 0);
	if (!e) {
		lost = bpf_map_lookup_elem(&exec_lost, &zero);
		if (lost)
			*lost += 1;
		return 0;
	}
	task = bpf_get_current_task_btf();
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->ppid = task->real_parent->tgid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->pad = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	off = ctx->__data_loc_filename & 0xffff;
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), (void *)ctx + off);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
