// SPDX-License-Identifier: GPL-2.0
/* Test object for the attach kinds and map kinds the examples do not use: raw_tp (syscall
 * numbers decoded to names, per-CPU hash), tp_btf and a perf event array of events, cgroup_skb
 * (TCP SYNs leaving the target's cgroup, an array) and perf_event (CPU samples, per-CPU array). */
#include "sidecar.bpf.h"

struct kinds_event {
	__u32 pid;
	__s32 old_pid;
	char comm[16];
};

struct kinds_event *unused_kinds_event __attribute__((unused));

struct sys_key {
	__u32 nr;
	char comm[16];
	__u32 pad;
	__u64 cgroup;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 512);
	__type(key, struct sys_key);
	__type(value, __u64);
} kinds_syscalls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} kinds_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} kinds_syns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} kinds_samples SEC(".maps");

SEC("cgroup_skb/egress")
int kinds_egress(struct __sk_buff *skb)
{
	struct iphdr ip;
	__u32 zero = 0;
	__u64 *c;
	__u8 flags;

	if (skb->protocol != bpf_htons(0x0800))
		return 1;
	if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) || ip.protocol != IPPROTO_TCP)
		return 1;
	if (bpf_skb_load_bytes(skb, ip.ihl * 4 + 13, &flags, 1))
		return 1;
	/* SYN without ACK: one per connect() */
	if ((flags & 0x12) == 0x02) {
		c = bpf_map_lookup_elem(&kinds_syns, &zero);
		if (c)
			__sync_fetch_and_add(c, 1);
	}
	return 1;
}

SEC("perf_event")
int kinds_sample(struct bpf_perf_event_data *ctx)
{
	__u32 zero = 0;
	__u64 *c;

	if (!sidecar_in_target())
		return 0;
	c = bpf_map_lookup_elem(&kinds_samples, &zero);
	if (c)
		*c += 1;
	return 0;
}

SEC("raw_tp/sys_enter")
int kinds_sys_enter(unsigned long long *ctx)
{
	struct sys_key k = { .nr = (__u32)ctx[1], .cgroup = bpf_get_current_cgroup_id() };
	__u64 one = 1, *c;

	if (!sidecar_in_target())
		return 0;
	bpf_get_current_comm(k.comm, sizeof(k.comm));
	c = bpf_map_lookup_elem(&kinds_syscalls, &k);
	if (c)
		*c += 1;
	else
		bpf_map_update_elem(&kinds_syscalls, &k, &one, BPF_ANY);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(kinds_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct kinds_event e = {};

	if (!sidecar_in_target())
		return 0;
	e.pid = p->tgid;
	e.old_pid = old_pid;
	bpf_get_current_comm(e.comm, sizeof(e.comm));
	bpf_perf_event_output(ctx, &kinds_events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
