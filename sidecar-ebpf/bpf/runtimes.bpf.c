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

/* The spec of the probe that fired when the hit is the target's, else NULL (a hit without a
 * spec is counted: the attach and the spec map disagree). */
static __always_inline struct usdt_spec *target_hit(struct pt_regs *ctx)
{
	if (!sidecar_in_target())
		return NULL;

	struct usdt_spec *spec = usdt_spec_of(ctx);

	if (!spec)
		bump(RT_BAD_SPECS);
	return spec;
}

/* Count a hit by (slot, label). */
SEC("uprobe")
int rt_count(struct pt_regs *ctx)
{
	struct usdt_spec *spec = target_hit(ctx);

	if (!spec)
		return 0;
	struct rt_key k = { .slot = spec->slot, .label = label_of(ctx, spec) };

	if (!sidecar_hash_inc(&rt_counts, &k))
		bump(RT_LOST_KEYS);
	return 0;
}

static __always_inline void begin_pair(__u32 slot, __u64 label)
{
	struct inflight_key k = { .tid = (__u32)bpf_get_current_pid_tgid(), .slot = slot };
	struct inflight v = { .ts = bpf_ktime_get_ns(), .label = label };

	if (bpf_map_update_elem(&rt_inflight, &k, &v, BPF_ANY))
		bump(RT_LOST_BEGINS);
}

/* Add one observation `d` to the struct rt_hist of `key` in hash map `map` (rt_hists,
 * rt_http_hists), created on first use; a full map counts in RT_LOST_KEYS. */
static __always_inline void hist_add(void *map, const void *key, __u64 d)
{
	struct rt_hist *h = bpf_map_lookup_elem(map, key);

	if (!h) {
		struct rt_hist zero = {};

		bpf_map_update_elem(map, key, &zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(map, key);
		if (!h) {
			bump(RT_LOST_KEYS);
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
static __always_inline void observe(__u32 slot, __u64 label, __u64 d)
{
	struct rt_key hk = { .slot = slot, .label = label };

	hist_add(&rt_hists, &hk, d);
}

static __always_inline void end_pair(__u32 slot)
{
	__u64 now = bpf_ktime_get_ns();
	struct inflight_key k = { .tid = (__u32)bpf_get_current_pid_tgid(), .slot = slot };
	struct inflight *b = bpf_map_lookup_elem(&rt_inflight, &k);

	if (!b) {
		bump(RT_UNMATCHED_ENDS);
		return;
	}
	__u64 d = now - b->ts, label = b->label;

	bpf_map_delete_elem(&rt_inflight, &k);
	observe(slot, label, d);
}

/* Start of a timed pair (gc__start, gc__begin, a function's entry): remember when, per thread. */
SEC("uprobe")
int rt_begin(struct pt_regs *ctx)
{
	struct usdt_spec *spec = target_hit(ctx);

	if (!spec)
		return 0;
	begin_pair(spec->slot, label_of(ctx, spec));
	return 0;
}

/* End of a timed pair: the duration goes to the (slot, begin's label) histogram. */
SEC("uprobe")
int rt_end(struct pt_regs *ctx)
{
	struct usdt_spec *spec = target_hit(ctx);

	if (!spec)
		return 0;
	end_pair(spec->slot);
	return 0;
}

/* A declared histogram of an argument's value (YAML --config `value_arg`): label from
 * label_arg, value (nanoseconds) from the argument in label2_arg. */
SEC("uprobe")
int rt_value(struct pt_regs *ctx)
{
	struct usdt_spec *spec = target_hit(ctx);
	__s64 lo = 0, v = 0;

	if (!spec)
		return 0;
	if (usdt_arg(ctx, spec, spec->label2_arg, &v)) {
		bump(RT_BAD_SPECS);
		return 0;
	}
	if (spec->label_arg != USDT_NO_ARG && usdt_arg(ctx, spec, spec->label_arg, &lo))
		bump(RT_BAD_SPECS);
	observe(spec->slot, (__u64)(__u32)lo, v < 0 ? 0 : (__u64)v);
	return 0;
}

/* Hits by one or two string arguments (python function__entry: filename, funcname; node
 * http__server__request: method, url): the spec's label_arg and label2_arg point at them. */
SEC("uprobe")
int rt_call(struct pt_regs *ctx)
{
	struct usdt_spec *spec = target_hit(ctx);

	if (!spec)
		return 0;

	__u32 zero = 0;
	struct rt_call_key *k = bpf_map_lookup_elem(&rt_call_scratch, &zero);
	__s64 first = 0, second = 0;

	if (!k || usdt_arg(ctx, spec, spec->label_arg, &first)) {
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

/* ---- Node.js: event-loop lag and HTTP durations from syscall tracepoints ----
 * A uprobe hit costs a trap (and a single-step when the instruction is not emulated, ~20 us in
 * a VM here); a syscall tracepoint costs ~0.1 us. So the per-turn and per-response points are
 * syscalls of the node processes the scanner registered in rt_loop_pids. */

/* Slot of the lag histogram (slot::NODE_LAG in runtimes.rs). */
#define RT_SLOT_NODE_LAG 8

/* Set before load: label HTTP requests with their path (--http-paths). */
const volatile __u32 rt_http_paths = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32); /* tgid */
	__type(value, __u32);
} rt_loop_pids SEC(".maps");

/* Set before load when the sidecar is not in the initial pid namespace (a `--pid=container:`
 * sidecar): that namespace (st_dev, st_ino of /proc/self/ns/pid). The scanner registers pids as
 * it reads them in /proc there (the app is PID 1), not as the kernel numbers them globally. */
const volatile __u64 rt_pidns_dev = 0;
const volatile __u64 rt_pidns_ino = 0;

static __always_inline int loop_process(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (rt_pidns_ino) {
		struct bpf_pidns_info ns = {};

		if (bpf_get_ns_current_pid_tgid(rt_pidns_dev, rt_pidns_ino, &ns, sizeof(ns)))
			return 0;
		tgid = ns.tgid;
	}
	return bpf_map_lookup_elem(&rt_loop_pids, &tgid) != 0;
}

/* epoll_wait/epoll_pwait/epoll_pwait2 entered: the loop turn since the last return ends. */
SEC("tracepoint/syscalls/sys_enter_epoll_pwait")
int rt_loop_enter(void *ctx)
{
	if (!sidecar_in_target() || !loop_process())
		return 0;
	end_pair(RT_SLOT_NODE_LAG);
	return 0;
}

/* ... returned: a loop turn (callbacks, nothing new served) starts. */
SEC("tracepoint/syscalls/sys_exit_epoll_pwait")
int rt_loop_exit(void *ctx)
{
	if (!sidecar_in_target() || !loop_process())
		return 0;
	begin_pair(RT_SLOT_NODE_LAG, 0);
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
	if (!sidecar_in_target() || !loop_process())
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

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct http_conn);
	__type(value, struct http_start);
} rt_http_inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct rt_http_key);
	__type(value, __u64);
} rt_http_reqs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct rt_http_key);
	__type(value, struct rt_hist);
} rt_http_hists SEC(".maps");

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

static __always_inline void count_request(struct rt_http_key *key)
{
	if (sidecar_hash_inc(&rt_http_reqs, key))
		return;
	/* Table full: the request still counts, without its path. */
	bump(RT_LOST_KEYS);
	__builtin_memset(key->path, 0, sizeof(key->path));
	if (!sidecar_hash_inc(&rt_http_reqs, key))
		bump(RT_LOST_KEYS);
}

/* llhttp finished a request message (llhttp__after_message_complete calls
 * llhttp_should_keep_alive; node's own call from on_headers_complete is inlined): count it, and
 * time it from the read() that delivered it, on that read's connection. The JS handler already
 * ran by now (node dispatches 'request' from on_headers_complete), hence the read's time. */
SEC("uprobe")
int rt_http(struct pt_regs *ctx)
{
	struct usdt_spec *spec = target_hit(ctx);

	if (!spec)
		return 0;

	__u32 zero = 0;
	struct http_start *st = bpf_map_lookup_elem(&rt_http_scratch, &zero);
	__s64 method = 0, type = 0;

	if (!st || usdt_arg(ctx, spec, spec->label_arg, &method) ||
	    usdt_arg(ctx, spec, spec->label2_arg, &type)) {
		bump(RT_BAD_SPECS);
		return 0;
	}
	/* llhttp type 1: a request (2 is a response parsed by an HTTP client). */
	if ((type & 0xff) != 1)
		return 0;
	__builtin_memset(st, 0, sizeof(*st));
	st->key.method = (__u32)(method & 0xff);
	struct last_read *r = bpf_task_storage_get(&rt_last_read, bpf_get_current_task_btf(), 0, 0);

	if (r && rt_http_paths)
		read_path(r->buf, st->key.path);
	count_request(&st->key);
	if (!r)
		return 0;
	struct http_conn c = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = r->fd };

	st->ts = r->ts;
	bpf_map_update_elem(&rt_http_inflight, &c, st, BPF_ANY);
	return 0;
}

/* First write(v) on a connection with a parsed request: the response goes out. */
SEC("tracepoint/syscalls/sys_enter_write")
int rt_write_enter(struct sidecar_sys_enter *ctx)
{
	if (!sidecar_in_target() || !loop_process())
		return 0;
	struct http_conn c = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = (__u32)ctx->args[0] };
	struct http_start *st = bpf_map_lookup_elem(&rt_http_inflight, &c);

	if (!st)
		return 0;
	__u64 d = bpf_ktime_get_ns() - st->ts;
	struct rt_http_key key = st->key;

	bpf_map_delete_elem(&rt_http_inflight, &c);
	hist_add(&rt_http_hists, &key, d);
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
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct http_conn);
	__type(value, struct http_start);
} rt_usdt_http_inflight SEC(".maps");

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
	struct usdt_spec *spec = target_hit(ctx);

	if (!spec)
		return 0;

	__u32 zero = 0;
	struct http_start *st = bpf_map_lookup_elem(&rt_http_scratch, &zero);
	struct http_conn c = {};
	__s64 method = 0, url = 0;

	if (!st || usdt_arg(ctx, spec, spec->label_arg, &method) ||
	    usdt_arg(ctx, spec, spec->label2_arg, &url) || usdt_http_conn(ctx, spec, &c)) {
		bump(RT_BAD_SPECS);
		return 0;
	}
	__builtin_memset(st, 0, sizeof(*st));
	st->key.method = method_number(method);
	st->key.client = spec->slot == RT_SLOT_NODE_USDT_CLIENT;
	if (rt_http_paths) {
		char line[RT_LINE_LEN] = {};

		if (bpf_probe_read_user_str(line, sizeof(line), (void *)url) > 0)
			copy_path(line, 0, st->key.path);
	}
	count_request(&st->key);
	st->ts = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&rt_usdt_http_inflight, &c, st, BPF_ANY))
		bump(RT_LOST_BEGINS);
	return 0;
}

/* http__server__response / http__client__response: the request on that fd is answered. */
SEC("uprobe")
int rt_usdt_http_done(struct pt_regs *ctx)
{
	struct usdt_spec *spec = target_hit(ctx);
	struct http_conn c = {};

	if (!spec)
		return 0;
	if (usdt_http_conn(ctx, spec, &c)) {
		bump(RT_BAD_SPECS);
		return 0;
	}
	struct http_start *st = bpf_map_lookup_elem(&rt_usdt_http_inflight, &c);

	if (!st) {
		bump(RT_UNMATCHED_ENDS);
		return 0;
	}
	__u64 d = bpf_ktime_get_ns() - st->ts;
	struct rt_http_key key = st->key;

	bpf_map_delete_elem(&rt_usdt_http_inflight, &c);
	hist_add(&rt_http_hists, &key, d);
	return 0;
}
