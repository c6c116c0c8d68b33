// SPDX-License-Identifier: GPL-2.0
/* Runtimes family: generic USDT / uprobe programs driven by per-site specs (usdt.bpf.h).
 * Userspace attaches the same few programs to many sites (python gc__start, hotspot gc__begin,
 * node's llhttp_should_keep_alive, …); the attach cookie selects the site's spec, and the spec
 * says which pack entry (slot) and which arguments make the label.
 *
 * Two kinds of slot meet here: the pack entry a site feeds (`spec->slot`, as in every key) and
 * the target (kernel-side slot, `target`) whose task hit it. Every table of counts and
 * timings is per target (SIDECAR_SLOT_MAP). Pack sites are the set's: attached once per
 * (file, offset, program) whoever asked first, their specs in the shared `usdt_specs`, and a hit
 * counts for the target of the task that made it. --config sites belong to one target: their
 * cookie carries that target (bits 32-63: slot + 1) and their specs are in its
 * `rt_declared_specs`; another target's hit on them is not theirs. */
#include "usdt.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define KEYS_MAX 4096
#define INFLIGHT_MAX 16384
#define CALLS_MAX 10240

struct rt_counts_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KEYS_MAX);
	SIDECAR_INNER_KV(struct rt_key, __u64);
};
SIDECAR_SLOT_MAP(rt_counts, struct rt_counts_map);

struct rt_hists_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KEYS_MAX);
	SIDECAR_INNER_KV(struct rt_key, struct rt_hist);
};
SIDECAR_SLOT_MAP(rt_hists, struct rt_hists_map);

/* Per target: the specs of its --config sites (see rt_spec_of), written by its sidecar. */
struct rt_declared_specs_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, USDT_SPECS_MAX);
	SIDECAR_INNER_KV(__u32, struct usdt_spec);
};
SIDECAR_SLOT_MAP(rt_declared_specs, struct rt_declared_specs_map);

/* Which entries of the set's `usdt_specs` are taken (key: the entry): userspace claims one with
 * BPF_NOEXIST before writing a pack site's spec there, so sidecars sharing the set never hand
 * out the same entry. Not read by the programs. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, USDT_SPECS_MAX);
	__type(key, __u32);
	__type(value, __u32);
} rt_spec_claims SEC(".maps");

/* Per target: its settings (entry 0), written by its sidecar at load. */
struct rt_config_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	SIDECAR_INNER_KV(__u32, struct rt_config);
};
SIDECAR_SLOT_MAP(rt_config, struct rt_config_map);

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
struct rt_inflight_map {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, INFLIGHT_MAX);
	SIDECAR_INNER_KV(struct inflight_key, struct inflight);
};
SIDECAR_SLOT_MAP(rt_inflight, struct rt_inflight_map);

struct rt_calls_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CALLS_MAX);
	SIDECAR_INNER_KV(struct rt_call_key, __u64);
};
SIDECAR_SLOT_MAP(rt_calls, struct rt_calls_map);

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

struct rt_counters_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RT_COUNTERS);
	SIDECAR_INNER_KV(__u32, __u64);
};
SIDECAR_SLOT_MAP(rt_counters, struct rt_counters_map);

static __always_inline void bump(__u32 target, __u32 idx)
{
	void *m = sidecar_slot_map(&rt_counters, target);
	__u64 *c = m ? bpf_map_lookup_elem(m, &idx) : NULL;

	if (c)
		*c += 1;
}

/* A hit of a target's task on a site: the target, and whether the site is one of its --config
 * sites (else a pack site). */
struct hit {
	__u32 target;
	__u32 declared;
};

static __always_inline __u64 label_of(void *ctx, struct hit *h, struct usdt_spec *spec)
{
	__s64 lo = 0, hi = 0;

	if (spec->label_arg != USDT_NO_ARG && usdt_arg(ctx, spec, spec->label_arg, &lo))
		bump(h->target, RT_BAD_SPECS);
	if (spec->label2_arg != USDT_NO_ARG && usdt_arg(ctx, spec, spec->label2_arg, &hi))
		bump(h->target, RT_BAD_SPECS);
	return ((__u64)(__u32)lo) | ((__u64)(__u32)hi << 32);
}

/* The spec of the probe that fired when the hit is a target's (one whose sidecar runs this
 * family: it has counters) and the site is for that target, else NULL. A pack site's spec
 * (cookie bits 32-63 zero) is in the set's `usdt_specs`; a --config site's in its target's
 * `rt_declared_specs`, and another target's hit on it is none of its business. A hit without a
 * spec is counted: the attach and the spec map disagree. */
static __always_inline struct usdt_spec *target_hit(struct pt_regs *ctx, struct hit *h)
{
	int target = sidecar_slot();

	if (target < 0 || !sidecar_slot_map(&rt_counters, target))
		return NULL;

	__u64 cookie = bpf_get_attach_cookie(ctx);
	__u32 owner = cookie >> 32, id = (__u32)cookie;
	struct usdt_spec *spec = NULL;

	h->target = target;
	h->declared = owner != 0;
	if (!owner) {
		spec = bpf_map_lookup_elem(&usdt_specs, &id);
	} else {
		void *m;

		if (owner != (__u32)target + 1)
			return NULL;
		m = sidecar_slot_map(&rt_declared_specs, target);
		if (m)
			spec = bpf_map_lookup_elem(m, &id);
	}
	if (!spec)
		bump(target, RT_BAD_SPECS);
	return spec;
}

/* Count a hit by (slot, label). */
SEC("uprobe")
int rt_count(struct pt_regs *ctx)
{
	struct hit h;
	struct usdt_spec *spec = target_hit(ctx, &h);

	if (!spec)
		return 0;
	struct rt_key k = { .slot = spec->slot, .label = label_of(ctx, &h, spec) };
	void *counts = sidecar_slot_map(&rt_counts, h.target);

	if (!counts || !sidecar_hash_inc(counts, &k))
		bump(h.target, RT_LOST_KEYS);
	return 0;
}

static __always_inline void begin_pair(__u32 target, __u32 slot, __u64 label)
{
	struct inflight_key k = { .tid = (__u32)bpf_get_current_pid_tgid(), .slot = slot };
	struct inflight v = { .ts = bpf_ktime_get_ns(), .label = label };
	void *m = sidecar_slot_map(&rt_inflight, target);

	if (!m || bpf_map_update_elem(m, &k, &v, BPF_ANY))
		bump(target, RT_LOST_BEGINS);
}

/* Add one observation `d` to the struct rt_hist of `key` in hash map `map` (a target's rt_hists,
 * rt_http_hists), created on first use; a full (or missing) map counts in RT_LOST_KEYS. */
static __always_inline void hist_add(__u32 target, void *map, const void *key, __u64 d)
{
	struct rt_hist *h = map ? bpf_map_lookup_elem(map, key) : NULL;

	if (!h) {
		struct rt_hist zero = {};

		if (!map) {
			bump(target, RT_LOST_KEYS);
			return;
		}
		bpf_map_update_elem(map, key, &zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(map, key);
		if (!h) {
			bump(target, RT_LOST_KEYS);
			return;
		}
	}
	__sync_fetch_and_add(&h->count, 1);
	__sync_fetch_and_add(&h->sum_ns, d);
	__u32 bucket = sidecar_hist_bucket(d);

	if (bucket < SIDECAR_HIST_BUCKETS)
		__sync_fetch_and_add(&h->hist[bucket], 1);
}

/* Add one observation `d` (ns, or a declared argument's value) to the (slot, label) histogram. */
static __always_inline void observe(__u32 target, __u32 slot, __u64 label, __u64 d)
{
	struct rt_key hk = { .slot = slot, .label = label };

	hist_add(target, sidecar_slot_map(&rt_hists, target), &hk, d);
}

static __always_inline void end_pair(__u32 target, __u32 slot)
{
	__u64 now = bpf_ktime_get_ns();
	struct inflight_key k = { .tid = (__u32)bpf_get_current_pid_tgid(), .slot = slot };
	void *m = sidecar_slot_map(&rt_inflight, target);
	struct inflight *b = m ? bpf_map_lookup_elem(m, &k) : NULL;

	if (!b) {
		bump(target, RT_UNMATCHED_ENDS);
		return;
	}
	__u64 d = now - b->ts, label = b->label;

	bpf_map_delete_elem(m, &k);
	observe(target, slot, label, d);
}

/* Start of a timed pair (gc__start, gc__begin, a function's entry): remember when, per thread. */
SEC("uprobe")
int rt_begin(struct pt_regs *ctx)
{
	struct hit h;
	struct usdt_spec *spec = target_hit(ctx, &h);

	if (!spec)
		return 0;
	begin_pair(h.target, spec->slot, label_of(ctx, &h, spec));
	return 0;
}

/* End of a timed pair: the duration goes to the (slot, begin's label) histogram. */
SEC("uprobe")
int rt_end(struct pt_regs *ctx)
{
	struct hit h;
	struct usdt_spec *spec = target_hit(ctx, &h);

	if (!spec)
		return 0;
	end_pair(h.target, spec->slot);
	return 0;
}

/* A declared histogram of an argument's value (YAML --config `value_arg`): label from
 * label_arg, value (nanoseconds) from the argument in label2_arg. */
SEC("uprobe")
int rt_value(struct pt_regs *ctx)
{
	struct hit h;
	struct usdt_spec *spec = target_hit(ctx, &h);
	__s64 lo = 0, v = 0;

	if (!spec)
		return 0;
	if (usdt_arg(ctx, spec, spec->label2_arg, &v)) {
		bump(h.target, RT_BAD_SPECS);
		return 0;
	}
	if (spec->label_arg != USDT_NO_ARG && usdt_arg(ctx, spec, spec->label_arg, &lo))
		bump(h.target, RT_BAD_SPECS);
	observe(h.target, spec->slot, (__u64)(__u32)lo, v < 0 ? 0 : (__u64)v);
	return 0;
}

/* Hits by one or two string arguments (python function__entry: filename, funcname; a --config
 * count by strings): the spec's label_arg and label2_arg point at them. The pack's site (python
 * function__entry) counts only for targets that asked for --runtime-calls: another target's
 * sidecar may have attached it. */
SEC("uprobe")
int rt_call(struct pt_regs *ctx)
{
	struct hit h;
	struct usdt_spec *spec = target_hit(ctx, &h);

	if (!spec)
		return 0;
	if (!h.declared && !sidecar_slot_wants(h.target, SIDECAR_SLOT_RUNTIME_CALLS))
		return 0;

	__u32 zero = 0;
	struct rt_call_key *k = bpf_map_lookup_elem(&rt_call_scratch, &zero);
	void *calls = sidecar_slot_map(&rt_calls, h.target);
	__s64 first = 0, second = 0;

	if (!k || usdt_arg(ctx, spec, spec->label_arg, &first)) {
		bump(h.target, RT_BAD_SPECS);
		return 0;
	}
	if (spec->label2_arg != USDT_NO_ARG && usdt_arg(ctx, spec, spec->label2_arg, &second))
		bump(h.target, RT_BAD_SPECS);
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
	if (!calls || !sidecar_hash_inc(calls, k))
		bump(h.target, RT_LOST_KEYS);
	return 0;
}

/* ---- Node.js: event-loop lag and HTTP durations from syscall tracepoints ----
 * A uprobe hit costs a trap (and a single-step when the instruction is not emulated, ~20 us in
 * a VM here); a syscall tracepoint costs ~0.1 us. So the per-turn and per-response points are
 * syscalls of the node processes the scanner registered in rt_loop_pids. */

/* Slot of the lag histogram (slot::NODE_LAG in runtimes.rs). */
#define RT_SLOT_NODE_LAG 8

/* Per target: its node processes (tgid -> 1), as its sidecar's scanner numbers them (see
 * struct rt_config). */
struct rt_loop_pids_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	SIDECAR_INNER_KV(__u32, __u32);
};
SIDECAR_SLOT_MAP(rt_loop_pids, struct rt_loop_pids_map);

/* A task of `target` is one of its registered node processes. */
static __always_inline int loop_process(__u32 target)
{
	__u32 zero = 0, tgid = bpf_get_current_pid_tgid() >> 32;
	void *pids = sidecar_slot_map(&rt_loop_pids, target);
	void *cm = sidecar_slot_map(&rt_config, target);
	struct rt_config *cfg = cm ? bpf_map_lookup_elem(cm, &zero) : NULL;

	if (!pids || !cfg)
		return 0;
	if (cfg->pidns_ino) {
		struct bpf_pidns_info ns = {};

		if (bpf_get_ns_current_pid_tgid(cfg->pidns_dev, cfg->pidns_ino, &ns, sizeof(ns)))
			return 0;
		tgid = ns.tgid;
	}
	return bpf_map_lookup_elem(pids, &tgid) != 0;
}

/* The target of the current task when it is one of that target's node processes, else -1. */
static __always_inline int loop_target(void)
{
	int target = sidecar_slot();

	return target >= 0 && loop_process(target) ? target : -1;
}

/* epoll_wait/epoll_pwait/epoll_pwait2 entered: the loop turn since the last return ends. */
SEC("tracepoint/syscalls/sys_enter_epoll_pwait")
int rt_loop_enter(void *ctx)
{
	int target = loop_target();

	if (target < 0)
		return 0;
	end_pair(target, RT_SLOT_NODE_LAG);
	return 0;
}

/* ... returned: a loop turn (callbacks, nothing new served) starts. */
SEC("tracepoint/syscalls/sys_exit_epoll_pwait")
int rt_loop_exit(void *ctx)
{
	int target = loop_target();

	if (target < 0)
		return 0;
	begin_pair(target, RT_SLOT_NODE_LAG, 0);
	return 0;
}

/* The last read() of each loop thread: which connection the parser is working on. */
struct last_read {
	__u64 buf;
	__u64 ts;
	__u32 fd;
	__u32 _pad;
};

/* In the thread itself (task storage): written on every read of a loop thread, so no hash
 * update, no LRU list lock, nothing to clean when the thread ends. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct last_read);
} rt_last_read SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_read")
int rt_read_enter(struct sidecar_sys_enter *ctx)
{
	if (loop_target() < 0)
		return 0;
	struct last_read *r = bpf_task_storage_get(&rt_last_read, bpf_get_current_task_btf(), 0,
						   BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (!r)
		return 0;
	r->buf = ctx->args[1];
	r->ts = bpf_ktime_get_ns();
	r->fd = (__u32)ctx->args[0];
	return 0;
}

/* A request whose head was parsed, waiting for its first response write: per (tgid, fd). */
struct http_conn {
	__u32 tgid;
	__u32 fd;
};

struct http_start {
	__u64 ts;
	struct rt_http_key key;
};

struct rt_http_inflight_map {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	SIDECAR_INNER_KV(struct http_conn, struct http_start);
};
SIDECAR_SLOT_MAP(rt_http_inflight, struct rt_http_inflight_map);

struct rt_http_reqs_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	SIDECAR_INNER_KV(struct rt_http_key, __u64);
};
SIDECAR_SLOT_MAP(rt_http_reqs, struct rt_http_reqs_map);

struct rt_http_hists_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	SIDECAR_INNER_KV(struct rt_http_key, struct rt_hist);
};
SIDECAR_SLOT_MAP(rt_http_hists, struct rt_http_hists_map);

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct http_start);
} rt_http_scratch SEC(".maps");

/* The request target at line[start] ("/a/12?x HTTP/1.1"): up to the first space, '?', '#', CR
 * or NUL, the digits a segment starts with turned into '0' so numeric ids do not fill the map
 * while "/api/v1" keeps its "1" (userspace normalises the rest). Branch-free per byte, so the
 * verifier walks one path. The line is a power of two long: indexes are masked to stay inside
 * it. */
#define RT_LINE_LEN 128
_Static_assert(RT_LINE_LEN >= RT_PATH_LEN + 16 && !(RT_LINE_LEN & (RT_LINE_LEN - 1)),
	       "a request line holds the method and a whole path; masks need a power of two");

static __always_inline void copy_path(const char *line, __u32 start, char *path)
{
	__u32 stop = 0, run = 0;
	char prev = 0;

	if (line[start & (RT_LINE_LEN - 1)] != '/')
		return;
	for (int i = 0; i < RT_PATH_LEN - 1; i++) {
		char c = line[(start + i) & (RT_LINE_LEN - 1)];
		__u32 digit = c >= '0' && c <= '9';

		stop |= c == ' ' || c == '?' || c == '#' || c == '\r' || c == 0;
		run = digit & (prev == '/' || run);
		prev = c;
		c = run ? '0' : c;
		path[i] = stop ? 0 : c;
	}
}

/* The path of the request line at the start of `buf` ("GET /a/12?x HTTP/1.1"); empty when the
 * read did not start with a request line. */
static __always_inline void read_path(__u64 buf, char *path)
{
	char line[RT_LINE_LEN];
	__u32 start = 0;

	/* A short buffer at the end of a mapping: the bytes a method and a whole path need. */
	if (bpf_probe_read_user(line, sizeof(line), (void *)buf) &&
	    bpf_probe_read_user(line, RT_PATH_LEN + 16, (void *)buf))
		return;
	for (int i = 8; i >= 3; i--)
		if (line[i] == ' ')
			start = i + 1;
	if (start)
		copy_path(line, start, path);
}

static __always_inline void count_request(__u32 target, struct rt_http_key *key)
{
	void *reqs = sidecar_slot_map(&rt_http_reqs, target);

	if (!reqs) {
		bump(target, RT_LOST_KEYS);
		return;
	}
	if (sidecar_hash_inc(reqs, key))
		return;
	/* Table full: the request still counts, without its path. */
	bump(target, RT_LOST_KEYS);
	__builtin_memset(key->path, 0, sizeof(key->path));
	if (!sidecar_hash_inc(reqs, key))
		bump(target, RT_LOST_KEYS);
}

/* llhttp finished a request message (llhttp__after_message_complete calls
 * llhttp_should_keep_alive; node's own call from on_headers_complete is inlined): count it, and
 * time it from the read() that delivered it, on that read's connection. The JS handler already
 * ran by now (node dispatches 'request' from on_headers_complete), hence the read's time. */
SEC("uprobe")
int rt_http(struct pt_regs *ctx)
{
	struct hit h;
	struct usdt_spec *spec = target_hit(ctx, &h);

	if (!spec)
		return 0;

	__u32 zero = 0;
	struct http_start *st = bpf_map_lookup_elem(&rt_http_scratch, &zero);
	__s64 method = 0, type = 0;

	if (!st || usdt_arg(ctx, spec, spec->label_arg, &method) ||
	    usdt_arg(ctx, spec, spec->label2_arg, &type)) {
		bump(h.target, RT_BAD_SPECS);
		return 0;
	}
	/* llhttp type 1: a request (2 is a response parsed by an HTTP client). */
	if ((type & 0xff) != 1)
		return 0;
	__builtin_memset(st, 0, sizeof(*st));
	st->key.method = (__u32)(method & 0xff);
	struct last_read *r = bpf_task_storage_get(&rt_last_read, bpf_get_current_task_btf(), 0, 0);

	if (r && sidecar_slot_wants(h.target, SIDECAR_SLOT_RUNTIME_HTTP_PATHS))
		read_path(r->buf, st->key.path);
	count_request(h.target, &st->key);

	void *inflight = sidecar_slot_map(&rt_http_inflight, h.target);

	if (!r || !inflight)
		return 0;
	struct http_conn c = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = r->fd };

	st->ts = r->ts;
	bpf_map_update_elem(inflight, &c, st, BPF_ANY);
	return 0;
}

/* First write(v) on a connection with a parsed request: the response goes out. */
SEC("tracepoint/syscalls/sys_enter_write")
int rt_write_enter(struct sidecar_sys_enter *ctx)
{
	int target = loop_target();

	if (target < 0)
		return 0;
	struct http_conn c = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = (__u32)ctx->args[0] };
	void *inflight = sidecar_slot_map(&rt_http_inflight, target);
	struct http_start *st = inflight ? bpf_map_lookup_elem(inflight, &c) : NULL;

	if (!st)
		return 0;
	__u64 d = bpf_ktime_get_ns() - st->ts;
	struct rt_http_key key = st->key;

	bpf_map_delete_elem(inflight, &c);
	hist_add(target, sidecar_slot_map(&rt_http_hists, target), &key, d);
	return 0;
}

/* ---- Node.js <= 18 built --with-dtrace: provider `node` (src/node_dtrace.cc) ----
 * http__{server,client}__request(req, conn, remote, port, method, url, fd) and
 * http__{server,client}__response(conn, remote, port, fd): the fd is the last argument of both.
 * Requests are counted by method (and url path) into the tables of the llhttp hook; each is
 * timed from its request probe to the response probe on the same fd. */

/* Slot of node USDT client requests (slot::NODE_USDT_CLIENT in runtimes.rs). */
#define RT_SLOT_NODE_USDT_CLIENT 11

/* Apart from rt_http_inflight: the llhttp path's write tracepoint must not end these. */
struct rt_usdt_http_inflight_map {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	SIDECAR_INNER_KV(struct http_conn, struct http_start);
};
SIDECAR_SLOT_MAP(rt_usdt_http_inflight, struct rt_usdt_http_inflight_map);

#define C7(a, b, c, d, e, f, g)                                                                   \
	((__u64)(a) | (__u64)(b) << 8 | (__u64)(c) << 16 | (__u64)(d) << 24 | (__u64)(e) << 32 | \
	 (__u64)(f) << 40 | (__u64)(g) << 48)

/* llhttp's number of a method name, as the llhttp hook labels; 255 ("other") for the rest. */
static __always_inline __u32 method_number(__u64 str)
{
	char m[8] = {};
	__u64 v;

	if (bpf_probe_read_user_str(m, sizeof(m), (void *)str) <= 0)
		return 255;
	__builtin_memcpy(&v, m, sizeof(v));
	switch (v) {
	case C7('D', 'E', 'L', 'E', 'T', 'E', 0): return 0;
	case C7('G', 'E', 'T', 0, 0, 0, 0): return 1;
	case C7('H', 'E', 'A', 'D', 0, 0, 0): return 2;
	case C7('P', 'O', 'S', 'T', 0, 0, 0): return 3;
	case C7('P', 'U', 'T', 0, 0, 0, 0): return 4;
	case C7('C', 'O', 'N', 'N', 'E', 'C', 'T'): return 5;
	case C7('O', 'P', 'T', 'I', 'O', 'N', 'S'): return 6;
	case C7('T', 'R', 'A', 'C', 'E', 0, 0): return 7;
	case C7('P', 'A', 'T', 'C', 'H', 0, 0): return 28;
	}
	return 255;
}

static __always_inline int usdt_http_conn(void *ctx, struct usdt_spec *spec, struct http_conn *c)
{
	__s64 fd = 0;

	if (usdt_arg(ctx, spec, spec->arg_cnt - 1, &fd))
		return -1;
	c->tgid = bpf_get_current_pid_tgid() >> 32;
	c->fd = (__u32)fd;
	return 0;
}

/* http__server__request / http__client__request: label_arg is the method, label2_arg the url. */
SEC("uprobe")
int rt_usdt_http(struct pt_regs *ctx)
{
	struct hit h;
	struct usdt_spec *spec = target_hit(ctx, &h);

	if (!spec)
		return 0;

	__u32 zero = 0;
	struct http_start *st = bpf_map_lookup_elem(&rt_http_scratch, &zero);
	void *inflight = sidecar_slot_map(&rt_usdt_http_inflight, h.target);
	struct http_conn c = {};
	__s64 method = 0, url = 0;

	if (!st || usdt_arg(ctx, spec, spec->label_arg, &method) ||
	    usdt_arg(ctx, spec, spec->label2_arg, &url) || usdt_http_conn(ctx, spec, &c)) {
		bump(h.target, RT_BAD_SPECS);
		return 0;
	}
	__builtin_memset(st, 0, sizeof(*st));
	st->key.method = method_number(method);
	st->key.client = spec->slot == RT_SLOT_NODE_USDT_CLIENT;
	if (sidecar_slot_wants(h.target, SIDECAR_SLOT_RUNTIME_HTTP_PATHS)) {
		char line[RT_LINE_LEN] = {};

		if (bpf_probe_read_user_str(line, sizeof(line), (void *)url) > 0)
			copy_path(line, 0, st->key.path);
	}
	count_request(h.target, &st->key);
	st->ts = bpf_ktime_get_ns();
	if (!inflight || bpf_map_update_elem(inflight, &c, st, BPF_ANY))
		bump(h.target, RT_LOST_BEGINS);
	return 0;
}

/* http__server__response / http__client__response: the request on that fd is answered. */
SEC("uprobe")
int rt_usdt_http_done(struct pt_regs *ctx)
{
	struct hit h;
	struct usdt_spec *spec = target_hit(ctx, &h);
	struct http_conn c = {};

	if (!spec)
		return 0;
	if (usdt_http_conn(ctx, spec, &c)) {
		bump(h.target, RT_BAD_SPECS);
		return 0;
	}
	void *inflight = sidecar_slot_map(&rt_usdt_http_inflight, h.target);
	struct http_start *st = inflight ? bpf_map_lookup_elem(inflight, &c) : NULL;

	if (!st) {
		bump(h.target, RT_UNMATCHED_ENDS);
		return 0;
	}
	__u64 d = bpf_ktime_get_ns() - st->ts;
	struct rt_http_key key = st->key;

	bpf_map_delete_elem(inflight, &c);
	hist_add(h.target, sidecar_slot_map(&rt_http_hists, h.target), &key, d);
	return 0;
}
