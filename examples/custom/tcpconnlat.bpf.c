// SPDX-License-Identifier: GPL-2.0
/* TCP connect latency of the target, per destination: time from SYN sent to ESTABLISHED, as one
 * struct value per (daddr, dport) — count, total, max and a log2 histogram in a single map.
 * Tracepoint sock:inet_sock_set_state only (no kprobes needed). */
#include "sidecar.bpf.h"

#define AF_INET 2
#define SLOTS 32

struct conn_key {
	__u8 daddr[4]; /* network order */
	__u16 dport;   /* host order (the tracepoint converts it) */
	__u16 pad;
};

struct conn_stats {
	__u64 count;
	__u64 total_ns;
	__u64 max_ns;
	__u64 slots[SLOTS]; /* log2 of ns */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); /* the socket's address */
	__type(value, __u64); /* SYN sent at (ns) */
} connlat_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct conn_key);
	__type(value, struct conn_stats);
} connlat SEC(".maps");

SEC("tracepoint/sock/inet_sock_set_state")
int connlat_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	__u64 sk = (__u64)ctx->skaddr, now, *start, d;
	struct conn_stats *s, zero = {};
	struct conn_key k = {};

	if (ctx->protocol != IPPROTO_TCP || ctx->family != AF_INET)
		return 0;
	if (ctx->newstate == TCP_SYN_SENT) {
		/* connect() runs in the caller's context: filter here. ESTABLISHED comes from softirq,
		 * whoever is on the CPU, so it is matched by socket instead. */
		if (!sidecar_in_target())
			return 0;
		now = bpf_ktime_get_ns();
		bpf_map_update_elem(&connlat_start, &sk, &now, BPF_ANY);
		return 0;
	}
	start = bpf_map_lookup_elem(&connlat_start, &sk);
	if (!start)
		return 0;
	if (ctx->oldstate != TCP_SYN_SENT || ctx->newstate != TCP_ESTABLISHED) {
		bpf_map_delete_elem(&connlat_start, &sk);
		return 0;
	}
	d = bpf_ktime_get_ns() - *start;
	bpf_map_delete_elem(&connlat_start, &sk);
	__builtin_memcpy(k.daddr, ctx->daddr, 4);
	k.dport = ctx->dport;
	s = bpf_map_lookup_elem(&connlat, &k);
	if (!s) {
		bpf_map_update_elem(&connlat, &k, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&connlat, &k);
		if (!s)
			return 0;
	}
	__sync_fetch_and_add(&s->count, 1);
	__sync_fetch_and_add(&s->total_ns, d);
	if (d > s->max_ns)
		s->max_ns = d; /* racy by design: a max that may miss a concurrent larger one */
	__sync_fetch_and_add(&s->slots[sidecar_log2(d) & (SLOTS - 1)], 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
