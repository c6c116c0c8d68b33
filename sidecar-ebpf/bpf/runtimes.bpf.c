// SPDX-License-Identifier: GPL-2.0
/* Runtimes family: generic USDT / uprobe programs driven by per-site specs (usdt.bpf.h).
 * Userspace attaches the same few programs to many sites (python gc__start, hotspot gc__begin,
 * node's llhttp_should_keep_alive, …); the attach cookie selects the site's spec, and the spec
 * says which pack entry (slot) and which arguments make the label. */
#include "usdt.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define KEYS_MAX 4096
#define INFLIGHT_MAX 16384
#define CALLS_MAX 10240

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KEYS_MAX);
	__type(key, struct rt_key);
	__type(value, __u64);
} rt_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KEYS_MAX);
	__type(key, struct rt_key);
	__type(value, struct rt_hist);
} rt_hists SEC(".maps");

/* In-flight begin per (thread, slot): start time and label. */
struct inflight_key {
	__u32 tid;
	__u32 slot;
};

struct inflight {
	__u64 ts;
	__u64 label;
};

/* LRU: a thread that dies between begin and end must not hold its slot forever. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, INFLIGHT_MAX);
	__type(key, struct inflight_key);
	__type(value, struct inflight);
} rt_inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CALLS_MAX);
	__type(key, struct rt_call_key);
	__type(value, __u64);
} rt_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rt_call_key);
} rt_call_scratch SEC(".maps");

#define LONG_STR 256

struct long_str {
	char s[LONG_STR];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct long_str);
} rt_str_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RT_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} rt_counters SEC(".maps");

static __always_inline void bump(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&rt_counters, &idx);

	if (c)
		*c += 1;
}

static __always_inline __u64 label_of(void *ctx, struct usdt_spec *spec)
{
	__s64 lo = 0, hi = 0;

	if (spec->label_arg != USDT_NO_ARG && usdt_arg(ctx, spec, spec->label_arg, &lo))
		bump(RT_BAD_SPECS);
	if (spec->label2_arg != USDT_NO_ARG && usdt_arg(ctx, spec, spec->label2_arg, &hi))
		bump(RT_BAD_SPECS);
	return ((__u64)(__u32)lo) | ((__u64)(__u32)hi << 32);
}

/* Count a hit by (slot, label). */
SEC("uprobe")
int rt_count(struct pt_regs *ctx)
{
	if (!sidecar_in_target())
		return 0;

	struct usdt_spec *spec = usdt_spec_of(ctx);

	if (!spec) {
		bump(RT_BAD_SPECS);
		return 0;
	}
	struct rt_key k = { .slot = spec->slot, .label = label_of(ctx, spec) };

	if (!sidecar_hash_inc(&rt_counts, &k))
		bump(RT_LOST_KEYS);
	return 0;
}

/* Start of a timed pair (gc__start, gc__begin, a function's entry): remember when, per thread. */
SEC("uprobe")
int rt_begin(struct pt_regs *ctx)
{
	if (!sidecar_in_target())
		return 0;

	struct usdt_spec *spec = usdt_spec_of(ctx);

	if (!spec) {
		bump(RT_BAD_SPECS);
		return 0;
	}
	struct inflight_key k = { .tid = (__u32)bpf_get_current_pid_tgid(), .slot = spec->slot };
	struct inflight v = { .ts = bpf_ktime_get_ns(), .label = label_of(ctx, spec) };

	if (bpf_map_update_elem(&rt_inflight, &k, &v, BPF_ANY))
		bump(RT_LOST_BEGINS);
	return 0;
}

/* End of a timed pair: the duration goes to the (slot, begin's label) histogram. */
SEC("uprobe")
int rt_end(struct pt_regs *ctx)
{
	if (!sidecar_in_target())
		return 0;

	struct usdt_spec *spec = usdt_spec_of(ctx);

	if (!spec) {
		bump(RT_BAD_SPECS);
		return 0;
	}
	__u64 now = bpf_ktime_get_ns();
	struct inflight_key k = { .tid = (__u32)bpf_get_current_pid_tgid(), .slot = spec->slot };
	struct inflight *b = bpf_map_lookup_elem(&rt_inflight, &k);

	if (!b) {
		bump(RT_UNMATCHED_ENDS);
		return 0;
	}
	__u64 d = now - b->ts;
	struct rt_key hk = { .slot = spec->slot, .label = b->label };

	bpf_map_delete_elem(&rt_inflight, &k);
	struct rt_hist *h = bpf_map_lookup_elem(&rt_hists, &hk);

	if (!h) {
		struct rt_hist zero = {};

		bpf_map_update_elem(&rt_hists, &hk, &zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&rt_hists, &hk);
		if (!h) {
			bump(RT_LOST_KEYS);
			return 0;
		}
	}
	__sync_fetch_and_add(&h->count, 1);
	__sync_fetch_and_add(&h->sum_ns, d);
	__u32 bucket = sidecar_hist_bucket(d);

	if (bucket < SIDECAR_HIST_BUCKETS)
		__sync_fetch_and_add(&h->hist[bucket], 1);
	return 0;
}

/* Hits by one or two string arguments (python function__entry: filename, funcname; node
 * http__server__request: method, url): the spec's label_arg and label2_arg point at them. */
SEC("uprobe")
int rt_call(struct pt_regs *ctx)
{
	if (!sidecar_in_target())
		return 0;

	struct usdt_spec *spec = usdt_spec_of(ctx);
	__u32 zero = 0;
	struct rt_call_key *k = bpf_map_lookup_elem(&rt_call_scratch, &zero);
	__s64 first = 0, second = 0;

	if (!spec || !k || usdt_arg(ctx, spec, spec->label_arg, &first)) {
		bump(RT_BAD_SPECS);
		return 0;
	}
	if (spec->label2_arg != USDT_NO_ARG && usdt_arg(ctx, spec, spec->label2_arg, &second))
		bump(RT_BAD_SPECS);
	__builtin_memset(k, 0, sizeof(*k));
	k->slot = spec->slot;
	long n = bpf_probe_read_user_str(k->module, sizeof(k->module), (void *)first);

	if (n == RT_STR_LEN) {
		/* Possibly cut: keep the end instead, where a path has its file name. Strings longer
		 * than LONG_STR keep bytes LONG_STR-RT_STR_LEN.. of the start. */
		struct long_str *buf = bpf_map_lookup_elem(&rt_str_scratch, &zero);
		long len = buf ? bpf_probe_read_user_str(buf->s, sizeof(buf->s), (void *)first) : 0;

		if (len > RT_STR_LEN && len <= LONG_STR)
			bpf_probe_read_user_str(k->module, sizeof(k->module),
						(void *)(first + len - RT_STR_LEN));
	}
	if (second)
		bpf_probe_read_user_str(k->function, sizeof(k->function), (void *)second);
	if (!sidecar_hash_inc(&rt_calls, k))
		bump(RT_LOST_KEYS);
	return 0;
}
