// SPDX-License-Identifier: GPL-2.0
/* Custom-probe scrape benchmark: one struct entry per distinct getpgid() argument, so a workload
 * calling getpgid(1..N) makes exactly N entries of three fields. */
#include "sidecar.bpf.h"

struct entry {
	__u64 count;
	__u64 total_ns;
	__u64 max_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct entry);
} bench_entries SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpgid")
int bench_getpgid(struct trace_event_raw_sys_enter *ctx)
{
	struct entry *e, zero = {};
	__u32 k = (__u32)ctx->args[0];
	__u64 v = k;

	if (!sidecar_in_target())
		return 0;
	e = bpf_map_lookup_elem(&bench_entries, &k);
	if (!e) {
		bpf_map_update_elem(&bench_entries, &k, &zero, BPF_NOEXIST);
		e = bpf_map_lookup_elem(&bench_entries, &k);
		if (!e)
			return 0;
	}
	__sync_fetch_and_add(&e->count, 1);
	__sync_fetch_and_add(&e->total_ns, v);
	if (v > e->max_ns)
		e->max_ns = v;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
