// SPDX-License-Identifier: GPL-2.0
/* Network family: packets and bytes by direction/family/protocol (cgroup_skb on the target's
 * cgroup), the TCP lifecycle (sock:inet_sock_set_state, tcp:*), failed connect/bind/listen by
 * errno, UDP receive-queue drops. Everything is aggregated here; userspace reads maps at scrape.
 *
 * Filtering: cgroup_skb programs are attached to the target's cgroup only, so the attachment is
 * the filter (they run in softirq, where `current` is whoever was interrupted). The TCP and UDP
 * tracepoints fire in softirq too, so they filter on the cgroup the SOCKET was created in, not on
 * the current task. Only sys_exit runs in the target's own context and uses sidecar_in_target(). */
#include "sidecar.bpf.h"
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

/* Set at load (--net-http): recognise HTTP/1.x in payloads. Off, sys_exit skips the task-storage
 * lookup it otherwise makes on every syscall of the host. */
const volatile __u8 http_enabled = 1;
/* Set at load (--http-paths): key the HTTP tables by request path too. */
const volatile __u8 http_paths = 0;
/* Set at load (--net-http): where payloads are read. 0 = TCP segments in the cgroup_skb programs
 * (no per-syscall work at all); 1 = read/write syscalls (the pid-namespace fallback, where there
 * is no cgroup to attach packet programs to). */
const volatile __u8 http_syscalls = 0;

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

/* x86_64 syscall numbers */
#define NR_CONNECT 42
#define NR_BIND 49
#define NR_LISTEN 50
#define EINPROGRESS 115

/* enum tcp_state values are UAPI-stable (include/net/tcp_states.h) */
#define ST_ESTABLISHED 1
#define ST_SYN_SENT 2
#define ST_SYN_RECV 3
#define ST_TIME_WAIT 6
#define ST_CLOSE 7
#define ST_NEW_SYN_RECV 12

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NET_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} net_counters SEC(".maps");

/* Same layout as the syscall stats: count, sum of ns, log2 buckets. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct syscall_stats);
} net_hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, NET_PEERS_MAX);
	__type(key, struct net_peer_key);
	__type(value, struct net_peer_stats);
} net_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 256);
	__type(key, struct net_error_key);
	__type(value, __u64);
} net_errors SEC(".maps");

/* Accepted connections by local (listening) port. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} net_accepts SEC(".maps");

struct conn {
	__u64 start;       /* SYN sent or child socket created */
	__u64 established; /* 0 until the handshake completed */
};

/* Live TCP connections of the target, by socket address. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct conn);
} net_conns SEC(".maps");

static __always_inline void bump(__u32 idx, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&net_counters, &idx);

	if (c)
		*c += n;
}

static __always_inline void observe(__u32 which, __u64 ns)
{
	struct syscall_stats *h = bpf_map_lookup_elem(&net_hists, &which);

	if (!h)
		return;
	h->calls++;
	h->time_ns += ns;
	h->hist[sidecar_hist_bucket(ns)]++;
}

/* Add n at key in a per-CPU u64 hash; count a loss when the table is full. */
static __always_inline void hash_add(void *map, void *key, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(map, key);

	if (c) {
		*c += n;
		return;
	}
	if (bpf_map_update_elem(map, key, &n, BPF_NOEXIST)) {
		c = bpf_map_lookup_elem(map, key);
		if (c)
			*c += n; /* another CPU inserted it first */
		else
			bump(NET_LOST_KEYS, 1);
	}
}

/* The socket belongs to the target: it was created by one of the target's tasks (sockets carry
 * their creator's cgroup; accepted sockets inherit the listener's). */
static __always_inline int sk_in_target(const struct sock *sk)
{
	__u32 zero = 0;
	struct sidecar_target *t = bpf_map_lookup_elem(&sidecar_target, &zero);

	if (!t || !sk)
		return 0;
	if (t->mode == SIDECAR_FILTER_CGROUP)
		return BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id) == t->cgroup_id;
	/* pid-namespace mode has no cgroup to compare: best effort on the current task, which is
	 * right in process context and may be wrong in softirq (documented). */
	return sidecar_in_target();
}

/* sk_in_target() for a BTF-typed socket (tp_btf): plain loads instead of probe reads. */
static __always_inline int sk_in_target_btf(const struct sock *sk)
{
	__u32 zero = 0;
	struct sidecar_target *t = bpf_map_lookup_elem(&sidecar_target, &zero);

	if (!t)
		return 0;
	if (t->mode == SIDECAR_FILTER_CGROUP) {
		struct cgroup *cg = sk->sk_cgrp_data.cgroup;

		return cg && cg->kn->id == t->cgroup_id;
	}
	return sidecar_in_target();
}

#define S_IFMT 00170000
#define S_IFSOCK 0140000

/* The TCP socket behind fd of the current task, or NULL (HTTP from syscalls; accepts in
 * net_pkt.bpf.h). */
static __always_inline struct sock *tcp_sock_of_fd(__u32 fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *f = NULL;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	if (!f || (BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *so = BPF_CORE_READ(f, private_data);
	struct sock *sk = BPF_CORE_READ(so, sk);

	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return NULL;
	return sk;
}

/* ---- packets and bytes, DNS, capture (cgroup_skb or tc), connection events ---- */

/* HTTP/1.x from TCP segments (below), called by the packet programs. */
static __always_inline void http_skb(struct __sk_buff *skb, int in, __u32 off);
/* A socket closed: forget the HTTP state kept for it (syscalls source). */
static __always_inline void http_forget(__u64 key);

#include "net_pkt.bpf.h"

/* ---- TCP lifecycle ---- */

static __always_inline void peer_of(const struct sock *sk, struct net_peer_key *k)
{
	__u16 family = sk->__sk_common.skc_family;

	k->family = family;
	k->port = bpf_ntohs(sk->__sk_common.skc_dport);
	if (family == AF_INET) {
		__be32 a = sk->__sk_common.skc_daddr;

		__builtin_memcpy(k->addr, &a, 4);
	} else {
		BPF_CORE_READ_INTO(&k->addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
}

static __always_inline void account_close(const struct sock *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	struct net_peer_key k = {};

	if (!tp)
		return;
	/* Payload as the application wrote and read it. bytes_sent counts data segments only (no
	 * SYN/FIN), retransmissions included; bytes_received is rcv_nxt progress, which includes
	 * the peer's FIN (SOCK_DONE is set when a FIN arrived; tcp_done sets nothing before the
	 * state change we run in). */
	__u64 sent = tp->bytes_sent - tp->bytes_retrans;
	__u64 received = tp->bytes_received;
	unsigned long flags = sk->__sk_common.skc_flags;

	if ((flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) && received > 0)
		received--;

	peer_of(sk, &k);
	struct net_peer_stats *s = bpf_map_lookup_elem(&net_peers, &k);

	if (!s) {
		struct net_peer_stats zero = {};

		/* Fails when the table is full (or another CPU inserted first: found below). */
		bpf_map_update_elem(&net_peers, &k, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&net_peers, &k);
	}
	if (s) {
		s->sent += sent;
		s->received += received;
		s->closed++;
	} else {
		bump(NET_OTHER_SENT, sent);
		bump(NET_OTHER_RECEIVED, received);
		bump(NET_OTHER_CLOSED, 1);
	}
}

/* tp_btf args: ctx[0] = const struct sock * (typed: read with plain loads), ctx[1] = old
 * state, ctx[2] = new state */
SEC("tp_btf/inet_sock_set_state")
int net_state(unsigned long long *ctx)
{
	const struct sock *sk = (const struct sock *)ctx[0];
	int old = (int)ctx[1], new = (int)ctx[2];

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	/* Only the transitions used below: skip the filter for the rest (FIN_WAIT, CLOSE_WAIT…). */
	if (new != ST_SYN_SENT && new != ST_SYN_RECV && new != ST_ESTABLISHED && new != ST_CLOSE)
		return 0;
	if (!sk_in_target_btf(sk))
		return 0;

	__u64 key = (__u64)sk, now = bpf_ktime_get_ns();
	struct conn *c;

	if (new == ST_SYN_SENT || (new == ST_SYN_RECV && old != ST_ESTABLISHED)) {
		struct conn v = { .start = now };

		if (bpf_map_update_elem(&net_conns, &key, &v, BPF_ANY))
			bump(NET_LOST_CONNS, 1);
		if (events_enabled && new == ST_SYN_SENT)
			ev_own(key); /* connect() runs here, in the connecting task */
		return 0;
	}
	if (new == ST_ESTABLISHED && (old == ST_SYN_SENT || old == ST_SYN_RECV)) {
		int active = old == ST_SYN_SENT;

		bump(active ? NET_CONN_ACTIVE : NET_CONN_PASSIVE, 1);
		if (!active) {
			__u32 port = sk->__sk_common.skc_num;

			hash_add(&net_accepts, &port, 1);
		}
		c = bpf_map_lookup_elem(&net_conns, &key);
		if (c) {
			c->established = now;
			if (active)
				observe(NET_HIST_CONNECT, now - c->start);
			if (events_enabled && active)
				ev_emit(sk, NET_EV_CONNECT, now - c->start);
		} else {
			struct conn v = { .start = now, .established = now };

			if (bpf_map_update_elem(&net_conns, &key, &v, BPF_ANY))
				bump(NET_LOST_CONNS, 1);
		}
		return 0;
	}
	if (new == ST_CLOSE) {
		http_forget(key);
		c = bpf_map_lookup_elem(&net_conns, &key);
		if (!c)
			return 0;
		if (c->established) {
			observe(NET_HIST_LIFETIME, now - c->start);
			account_close(sk);
			if (events_enabled)
				ev_emit(sk, NET_EV_CLOSE, now - c->start);
		}
		bpf_map_delete_elem(&net_conns, &key);
	}
	return 0;
}

/* A full socket (not a time-wait or request mini-socket, which have no cgroup data). */
static __always_inline int full_sock(const struct sock *sk)
{
	__u8 st;

	if (!sk)
		return 0;
	st = BPF_CORE_READ(sk, __sk_common.skc_state);
	return st != ST_TIME_WAIT && st != ST_NEW_SYN_RECV;
}

/* raw_tp args: ctx[0] = const struct sock *, ctx[1] = skb, ctx[2] = err */
SEC("raw_tp/tcp_retransmit_skb")
int net_retransmit(unsigned long long *ctx)
{
	const struct sock *sk = (const struct sock *)ctx[0];

	if (full_sock(sk) && sk_in_target(sk))
		bump(NET_RETRANSMITS, 1);
	return 0;
}

/* raw_tp args: ctx[0] = const struct sock * (NULL when no socket matched), ctx[1] = skb,
 * ctx[2] = reason */
SEC("raw_tp/tcp_send_reset")
int net_send_reset(unsigned long long *ctx)
{
	const struct sock *sk = (const struct sock *)ctx[0];

	if (full_sock(sk) && sk_in_target(sk))
		bump(NET_RESETS_SENT, 1);
	return 0;
}

/* raw_tp args: ctx[0] = struct sock * */
SEC("raw_tp/tcp_receive_reset")
int net_receive_reset(unsigned long long *ctx)
{
	const struct sock *sk = (const struct sock *)ctx[0];

	if (full_sock(sk) && sk_in_target(sk))
		bump(NET_RESETS_RECEIVED, 1);
	return 0;
}

/* raw_tp args: ctx[0] = rc, ctx[1] = struct sock *, ctx[2] = skb */
SEC("raw_tp/udp_fail_queue_rcv_skb")
int net_udp_drop(unsigned long long *ctx)
{
	const struct sock *sk = (const struct sock *)ctx[1];

	if (sk_in_target(sk))
		bump(NET_UDP_DROPS, 1);
	return 0;
}

/* ---- HTTP/1.x: requests and answers followed through each connection's byte streams ---- */

/* Both payload sources (TCP segments in the packet programs, read/write syscalls) feed the same
 * parser, per connection and per direction: it knows where the next message head starts because
 * it follows HTTP/1 framing (Content-Length and chunked bodies are skipped, on requests and
 * answers; HEAD requests and 1xx/204/304 answers have none), so text inside a body is never read
 * as a request or status line. Requests wait in a per-connection FIFO and are paired with answers
 * in order (pipelining). What the parser cannot follow (a head split across segments, a chunk-size
 * line cut, missed bytes where a head was due, more than HTTP_PIPELINE requests waiting) stops
 * the connection's tracking until it closes, counted by reason (NET_HTTP_UNTRACKED + reason):
 * nothing is guessed. A connection is followed only from its first byte (a request line): one
 * already carrying data when first seen is never followed. */

#define NR_READ 0
#define NR_WRITE 1
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define MSG_PEEK 2

#define HTTP_PIPELINE 8    /* requests waiting for their answers, per connection (power of 2) */
#define HTTP_STEPS 16      /* heads, chunks and trailers followed per segment or call */
#define HTTP_HEAD_MAX 2048 /* longest head (request or status line and headers) followed */

enum http_state {
	HS_HEAD = 0,    /* a message head starts at the next byte */
	HS_BODY = 1,    /* `left` bytes of a Content-Length body */
	HS_CHUNK = 2,   /* a chunk-size line starts at the next byte */
	HS_DATA = 3,    /* `left` bytes of chunk data and its CRLF */
	HS_TRAILER = 4, /* the trailer section after the last chunk */
	HS_DONE = 5,    /* an answer delimited by the connection's close: nothing more to frame */
};

/* One direction of a connection. */
struct http_stream {
	__u64 left;
	__u32 next;  /* sequence number of the next byte: TCP seq (packets), copied_seq/write_seq
		      * (syscalls) */
	__u32 state; /* enum http_state */
};

/* A request waiting for its answer. */
struct http_req {
	__u64 start;
	__u32 method;
	__u32 nobody;                 /* HEAD: its answer has no body whatever it says */
	char path[NET_HTTP_PATH_LEN]; /* only with --http-paths */
};

struct http_conn {
	struct http_stream s[2]; /* [0] received, [1] sent */
	__u8 req_dir;            /* 0: no request yet; 1: requests received (server); 2: sent (client) */
	__u8 off;                /* not followed any more (untracked, or another protocol after 101) */
	__u8 head;               /* oldest waiting request in q */
	__u8 count;              /* requests waiting */
	__u32 pad;
	struct http_req q[HTTP_PIPELINE];
};

/* The read/write in flight, per thread (task-local: no table to fill, nothing to clean). */
struct http_call {
	__u64 buf;
	__u32 fd;
	__u32 nr1; /* syscall number + 1; 0 = none in flight (read is 0) */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct http_call);
} net_http_calls SEC(".maps");

/* Connections followed from read/write syscalls (--net-http syscalls), by socket address; deleted
 * when the socket closes (net_state). LRU: a table full of connections that never closed cannot
 * stop new ones (an evicted connection is not followed again: `midstream`); per-CPU LRU lists:
 * no shared lock to take. 4096 x 552 bytes, about the memory of the 16384-entry table of single
 * pending requests it replaced. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct http_conn);
} net_http_conns SEC(".maps");

/* The same, for payloads read from TCP segments: kept on the socket itself, gone with it. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct http_conn);
} net_http_sk SEC(".maps");

/* A zeroed connection to insert into net_http_conns (too large for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct http_conn);
} net_http_conn_zero SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct net_http_key);
	__type(value, __u64);
} net_http_requests SEC(".maps");

/* Request start to response start, by dir * NET_HTTP_METHODS + method. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NET_HTTP_DIRS * NET_HTTP_METHODS);
	__type(key, __u32);
	__type(value, struct syscall_stats);
} net_http_hists SEC(".maps");

/* --http-paths: requests and durations by (dir, method, status, path); replaces the two tables
 * above when on. Full: the all-zero path collects the rest. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, NET_HTTP_PATHS_MAX);
	__type(key, struct net_http_path_key);
	__type(value, struct syscall_stats);
} net_http_paths SEC(".maps");

/* Map values are too large for the stack: build new entries here. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct syscall_stats);
} net_http_zero SEC(".maps");

/* The socket closed (net_state): forget its syscall-fed parser state. */
static __always_inline void http_forget(__u64 key)
{
	if (http_enabled && http_syscalls)
		bpf_map_delete_elem(&net_http_conns, &key);
}

/* raw_tp args: ctx[0] = struct pt_regs *, ctx[1] = syscall number. Only the six calls that
 * carry payloads are remembered; every other syscall leaves at the first comparison. */
SEC("raw_tp/sys_enter")
int net_sys_enter(unsigned long long *ctx)
{
	long nr = (long)ctx[1];

	if (nr != NR_READ && nr != NR_WRITE && nr != NR_SENDTO && nr != NR_RECVFROM &&
	    nr != NR_READV && nr != NR_WRITEV)
		return 0;
	if (!sidecar_in_target())
		return 0;

	struct pt_regs *regs = (struct pt_regs *)ctx[0];

	/* A peek leaves the bytes in the socket: they are seen again by the read that takes them. */
	if (nr == NR_RECVFROM && (BPF_CORE_READ(regs, r10) & MSG_PEEK))
		return 0;
	struct http_call *c = bpf_task_storage_get(&net_http_calls, bpf_get_current_task_btf(), 0,
						   BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (!c)
		return 0;
	c->fd = (__u32)BPF_CORE_READ(regs, di);
	c->buf = BPF_CORE_READ(regs, si);
	c->nr1 = (__u32)nr + 1;
	return 0;
}

static __always_inline int has(const char *b, const char *p, int n)
{
	for (int i = 0; i < n; i++)
		if (b[i] != p[i])
			return 0;
	return 1;
}

/* Case-insensitive has() for header names (`lower`: lower case, '-' and ':'; all have 0x20). */
static __always_inline int has_ci(const char *b, const char *lower, int n)
{
	for (int i = 0; i < n; i++)
		if ((b[i] | 0x20) != lower[i])
			return 0;
	return 1;
}

/* Index of a request line's method, or -1. */
static __always_inline int http_method(const char *b)
{
	if (has(b, "GET ", 4))
		return 0;
	if (has(b, "POST ", 5))
		return 1;
	if (has(b, "PUT ", 4))
		return 2;
	if (has(b, "DELETE ", 7))
		return 3;
	if (has(b, "HEAD ", 5))
		return 4;
	if (has(b, "PATCH ", 6))
		return 5;
	if (has(b, "OPTIONS ", 8))
		return 6;
	return -1;
}

#define HTTP_HEAD_METHOD 4

/* Status of a status line ("HTTP/1.x NNN"), or 0. */
static __always_inline __u32 http_status(const char *b)
{
	if (!has(b, "HTTP/1.", 7) || b[8] != ' ')
		return 0;
	for (int i = 9; i < 12; i++)
		if (b[i] < '0' || b[i] > '9')
			return 0;
	__u32 st = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');

	return st >= 100 && st <= 599 ? st : 0;
}

static const __u8 method_len[8] = { 3, 4, 3, 6, 4, 5, 7, 0 };

/* Cut a request target at its end (' ', '?', '#', CR): the query string and fragment never
 * leave the kernel; the rest is NUL-padded so equal paths make equal keys. */
static __always_inline void http_path_cut(char *dst)
{
	for (int i = 0, end = 0; i < NET_HTTP_PATH_LEN; i++) {
		if (dst[i] == ' ' || dst[i] == '?' || dst[i] == '#' || dst[i] == '\r' || dst[i] == 0)
			end = 1;
		if (end)
			dst[i] = 0;
	}
}

/* ---- framing: heads, header lines, chunk-size lines ----
 *
 * Global (not inlined) functions: the verifier checks each once, however many times the
 * per-segment loop calls them. Two copies of each, one reading a TCP segment (cgroup_skb), one
 * reading user memory (sys_exit); the body is shared (skb NULL: user memory at ubuf). */

struct http_hdr {
	__u64 cl;     /* Content-Length; for a chunk-size line the size */
	__u32 len;    /* bytes of the head (blank line included), trailer or chunk-size line */
	__u32 flags;  /* HH_* */
	__s32 method; /* request line: its method; -1 otherwise */
	__u32 status; /* status line: its status; 0 otherwise */
	__u64 prev;   /* scan: the 8 bytes before the block */
};

#define HH_CL 1      /* Content-Length seen */
#define HH_CHUNKED 2 /* Transfer-Encoding: chunked */
#define HH_BAD 4     /* framing not followed: other transfer coding, bad or conflicting length */

enum http_frame_kind { HF_HEAD = 0, HF_TRAILER = 1, HF_CHUNK = 2 };

/* n in [1, max] (max a power of 2) in a form the verifier follows, whatever clang made of the
 * bounds checks before: an identity for the values the callers pass. */
#define HTTP_SIZE(n, max) ((((n) - 1) & ((max) - 1)) + 1)

static __always_inline long http_load(struct __sk_buff *skb, __u64 ubuf, __u32 off, void *dst,
				      __u32 n)
{
	if (skb)
		return bpf_skb_load_bytes(skb, off, dst, n);
	return bpf_probe_read_user(dst, n, (const void *)(ubuf + off));
}

/* A header line at `off` (`rem` bytes left): Content-Length or Transfer-Encoding. */
static __always_inline int http_line(struct __sk_buff *skb, __u64 ubuf, __u32 off, __u32 rem,
				     struct http_hdr *h)
{
	char l[32] = {};
	__u32 n = rem < 32 ? rem : 32;

	/* "Content-Length: 0\r" is the shortest line that matters; a cut one (the head goes on
	 * past the payload) is rejected later, as the head's end is not found. */
	if (!h || n < 18)
		return 0;
	if (http_load(skb, ubuf, off, l, HTTP_SIZE(n, 32))) {
		h->flags |= HH_BAD;
		return 0;
	}
	if (has_ci(l, "content-length:", 15)) {
		__u64 v = 0;
		int digits = 0, phase = 0; /* 0: before the digits, 1: in, 2: after, 3: CR/LF */

		for (int i = 15; i < 32; i++) {
			char c = l[i];

			if (c == ' ' || c == '\t') {
				if (phase == 1)
					phase = 2;
				continue;
			}
			if (c >= '0' && c <= '9' && phase < 2) {
				v = v * 10 + (c - '0');
				digits++;
				phase = 1;
				continue;
			}
			phase = c == '\r' || c == '\n' ? 3 : 4;
			break;
		}
		if (phase != 3 || !digits || digits > 15 || ((h->flags & HH_CL) && h->cl != v))
			h->flags |= HH_BAD;
		h->cl = v;
		h->flags |= HH_CL;
		return 0;
	}
	if (has_ci(l, "transfer-encoding:", 18)) {
		int i = 18;

		for (int k = 0; k < 6; k++)
			if (l[i] == ' ' || l[i] == '\t')
				i++;
		if (i > 24)
			i = 24;
		/* Only a lone "chunked" is followed ("gzip, chunked" and others: not). */
		if (has_ci(&l[i], "chunked", 7) &&
		    (l[i + 7] == '\r' || l[i + 7] == '\n' || l[i + 7] == ' ' || l[i + 7] == '\t'))
			h->flags |= HH_CHUNKED;
		else
			h->flags |= HH_BAD;
	}
	return 0;
}

__attribute__((noinline)) int http_line_skb(struct __sk_buff *skb, __u32 off, __u32 rem,
					   struct http_hdr *h)
{
	if (!skb) /* lets clang drop the user-memory branches */
		return 0;
	return http_line(skb, 0, off, rem, h);
}

__attribute__((noinline)) int http_line_user(__u64 ubuf, __u32 off, __u32 rem, struct http_hdr *h)
{
	return http_line(0, ubuf, off, rem, h);
}

/* One 64-byte block (at p of a head or trailer section starting at `off`, `avail` bytes of
 * payload) in the search for the blank line that ends the section: 8 bytes at a time for the line
 * feeds; a line feed ends the section when the byte before it is one too, or a CR after one,
 * decided from the bytes themselves (this word, or the previous one: h->prev), so nothing the
 * verifier would have to track exactly is carried from line to line. Header lines starting with c
 * or t are looked at (http_line). 1: the end (h->len); 0: not in this block; -1: not followed. */
static __always_inline int http_block(struct __sk_buff *skb, __u64 ubuf, __u32 off, __u32 avail,
				      __u32 p, struct http_hdr *h)
{
	__u64 w[8] = {};
	__u32 n;

	if (!h || p >= avail || p > HTTP_HEAD_MAX)
		return -1;
	n = avail - p;
	if (n > 64)
		n = 64;
	if (http_load(skb, ubuf, off + p, w, HTTP_SIZE(n, 64)))
		return -1;
	__u64 prev = h->prev;

	for (int k = 0; k < 8; k++) {
		__u64 v = w[k], x = v ^ 0x0a0a0a0a0a0a0a0aULL;

		/* no line feed in these 8 bytes (the zero padding past `n` holds none) */
		if (!((x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL)) {
			prev = v;
			continue;
		}
#pragma unroll
		for (int j = 0; j < 8; j++) {
			if (((v >> (8 * j)) & 0xff) != '\n')
				continue;
			__u32 q = p + k * 8 + j;
			__u8 b1 = j >= 1 ? (v >> (8 * (j - 1))) & 0xff : prev >> 56;
			__u8 b2 = j >= 2 ? (v >> (8 * (j - 2))) & 0xff
				: j == 1 ? prev >> 56 : (prev >> 48) & 0xff;

			if (b1 == '\n' || (b1 == '\r' && b2 == '\n')) {
				h->len = q + 1;
				return 1;
			}
			__u8 first = j < 7 ? ((v >> (8 * (j + 1))) & 0xff) | 0x20 : 'c';

			if (first == 'c' || first == 't') {
				if (skb)
					http_line_skb(skb, off + q + 1, avail - q - 1, h);
				else
					http_line_user(ubuf, off + q + 1, avail - q - 1, h);
			}
		}
		prev = v;
	}
	h->prev = prev;
	return 0;
}

__attribute__((noinline)) int http_block_skb(struct __sk_buff *skb, __u32 off, __u32 avail,
					    __u32 p, struct http_hdr *h)
{
	if (!skb) /* lets clang drop the user-memory branches */
		return -1;
	return http_block(skb, 0, off, avail, p, h);
}

__attribute__((noinline)) int http_block_user(__u64 ubuf, __u32 off, __u32 avail, __u32 p,
					     struct http_hdr *h)
{
	return http_block(0, ubuf, off, avail, p, h);
}

/* The section's end: 1 (h->len) or 0 (not within the payload or HTTP_HEAD_MAX). */
static __always_inline int http_scan(struct __sk_buff *skb, __u64 ubuf, __u32 off, __u32 avail,
				     struct http_hdr *h)
{
	/* the byte before the first: a line feed (a trailer section may be empty) */
	h->prev = 0x0a00000000000000ULL;
	for (int blk = 0; blk < HTTP_HEAD_MAX / 64; blk++) {
		int r = skb ? http_block_skb(skb, off, avail, blk * 64, h)
			    : http_block_user(ubuf, off, avail, blk * 64, h);

		if (r)
			return r > 0;
	}
	return 0;
}

/* A chunk-size line at `off`: hex size, then an extension or spaces up to the line feed, within
 * 24 bytes. 1: h->cl = size, h->len = the line's length; 0: not followed. */
static __always_inline int http_chunk_line(struct __sk_buff *skb, __u64 ubuf, __u32 off,
					   __u32 avail, struct http_hdr *h)
{
	char b[32] = {};
	__u32 n = avail < 24 ? avail : 24;
	__u64 v = 0;
	int digits = 0, phase = 0;

	if (n < 3 || http_load(skb, ubuf, off, b, HTTP_SIZE(n, 32)))
		return 0;
	for (int i = 0; i < 24; i++) {
		char c = b[i];
		int x = c >= '0' && c <= '9' ? c - '0'
		      : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : -1;

		if (i >= n)
			return 0; /* the line goes on past the payload */
		if (phase == 0 && x >= 0) {
			if (++digits > 15)
				return 0;
			v = v * 16 + x;
			continue;
		}
		if (c == '\n') {
			if (!digits)
				return 0;
			h->cl = v;
			h->len = i + 1;
			return 1;
		}
		phase = 1; /* CR, ";extension", spaces: up to the line feed */
	}
	return 0;
}

/* Frame at `off` of kind HF_*: a head (request or status line first), a trailer section, or a
 * chunk-size line. 1: followed (h filled); 0: not. */
static __always_inline int http_frame(struct __sk_buff *skb, __u64 ubuf, __u32 off, __u32 avail,
				      struct http_hdr *h, __u32 kind)
{
	char b[16] = {};

	if (!h)
		return 0;
	h->cl = 0;
	h->len = 0;
	h->flags = 0;
	h->method = -1;
	h->status = 0;
	if (kind == HF_CHUNK)
		return http_chunk_line(skb, ubuf, off, avail, h);
	if (kind == HF_HEAD) {
		/* The shortest request ("GET / HTTP/1.0\r\n\r\n") and status line are longer. */
		if (avail < 16 || http_load(skb, ubuf, off, b, 16))
			return 0;
		h->method = http_method(b);
		if (h->method < 0) {
			h->status = http_status(b);
			if (!h->status)
				return 0;
		}
	}
	return http_scan(skb, ubuf, off, avail, h);
}

__attribute__((noinline)) int http_frame_skb(struct __sk_buff *skb, __u32 off, __u32 avail,
					    struct http_hdr *h, __u32 kind)
{
	if (!skb) /* lets clang drop the user-memory branches */
		return 0;
	return http_frame(skb, 0, off, avail, h, kind);
}

__attribute__((noinline)) int http_frame_user(__u64 ubuf, __u32 off, __u32 avail,
					     struct http_hdr *h, __u32 kind)
{
	return http_frame(0, ubuf, off, avail, h, kind);
}

/* ---- pairing and counting ---- */

static __always_inline struct syscall_stats *path_stats(struct net_http_path_key *k)
{
	struct syscall_stats *v = bpf_map_lookup_elem(&net_http_paths, k);
	__u32 zero = 0;

	if (v)
		return v;
	struct syscall_stats *init = bpf_map_lookup_elem(&net_http_zero, &zero);

	if (!init)
		return NULL;
	/* Full: fold this path into the overflow slot. */
	if (bpf_map_update_elem(&net_http_paths, k, init, BPF_NOEXIST) &&
	    !bpf_map_lookup_elem(&net_http_paths, k)) {
		__builtin_memset(k->path, 0, NET_HTTP_PATH_LEN);
		bpf_map_update_elem(&net_http_paths, k, init, BPF_NOEXIST);
	}
	return bpf_map_lookup_elem(&net_http_paths, k);
}

/* The request `p` (direction dir: 0 server, 1 client) is answered with status `st` now. Global:
 * checked once, not once per step of the per-segment loop. */
__attribute__((noinline)) int http_end(struct http_req *p, __u32 dir, __u32 st, __u64 now)
{
	struct syscall_stats *hs;

	if (!p)
		return 0;
	__u64 d = now - p->start;

	if (http_paths) {
		struct net_http_path_key pk = { .dir = dir, .method = p->method, .status = st };

		__builtin_memcpy(pk.path, p->path, NET_HTTP_PATH_LEN);
		hs = path_stats(&pk);
	} else {
		struct net_http_key k = { .dir = dir, .method = p->method, .status = st };
		__u32 h = dir * NET_HTTP_METHODS + (p->method & (NET_HTTP_METHODS - 1));

		hash_add(&net_http_requests, &k, 1);
		hs = bpf_map_lookup_elem(&net_http_hists, &h);
	}
	if (hs) {
		hs->calls++;
		hs->time_ns += d;
		hs->hist[sidecar_hist_bucket(d)]++;
	}
	return 0;
}

/* --http-paths: the request target at `off` (`n` bytes of payload from there) into q->path, cut at
 * its end. Fixed sizes (what the verifier wants), as much as the payload has: whatever follows
 * the target is cut off. Global: checked once. */
static __always_inline void http_path(struct __sk_buff *skb, __u64 ubuf, __u32 off, __u32 n,
				      struct http_req *q)
{
	char *dst = q->path;

	__builtin_memset(dst, 0, NET_HTTP_PATH_LEN);
	if (n >= 48)
		http_load(skb, ubuf, off, dst, 48);
	else if (n >= 32)
		http_load(skb, ubuf, off, dst, 32);
	else if (n >= 16)
		http_load(skb, ubuf, off, dst, 16);
	else
		http_load(skb, ubuf, off, dst, 8);
	http_path_cut(dst);
}

__attribute__((noinline)) int http_path_skb(struct __sk_buff *skb, __u32 off, __u32 n,
					   struct http_req *q)
{
	if (skb && q)
		http_path(skb, 0, off, n, q);
	return 0;
}

__attribute__((noinline)) int http_path_user(__u64 ubuf, __u32 off, __u32 n, struct http_req *q)
{
	if (q)
		http_path(0, ubuf, off, n, q);
	return 0;
}

/* Stop following the connection until it closes; counted once, by reason. */
static __always_inline void http_untrack(struct http_conn *c, __u32 why)
{
	c->off = 1;
	bump(NET_HTTP_UNTRACKED + why, 1);
}

/* A head was followed on stream `s` (received if `in`): queue a request, or pair an answer with
 * the oldest waiting request; then the body's framing. 1: stop reading this payload. */
static __always_inline int http_message(struct http_conn *c, struct http_stream *s, int in,
					struct http_hdr *h, struct __sk_buff *skb, __u64 ubuf,
					__u32 hoff, __u32 avail, __u64 now)
{
	__u8 dir = in ? 1 : 2; /* req_dir if this is a request */

	if (h->method >= 0) {
		if (!c->req_dir)
			c->req_dir = dir;
		if (c->req_dir != dir || c->count >= HTTP_PIPELINE) {
			http_untrack(c, NET_HTTP_UT_PIPELINE);
			return 1;
		}
		if (h->flags & HH_BAD) {
			http_untrack(c, NET_HTTP_UT_BODY);
			return 1;
		}
		struct http_req *q = &c->q[(c->head + c->count) & (HTTP_PIPELINE - 1)];
		int m = h->method & 7;

		q->start = now;
		q->method = m;
		q->nobody = m == HTTP_HEAD_METHOD;
		if (http_paths) {
			__u32 poff = method_len[m] + 1;

			if (skb)
				http_path_skb(skb, hoff + poff, avail - poff, q);
			else
				http_path_user(ubuf, hoff + poff, avail - poff, q);
		}
		c->count++;
		/* A request without Content-Length or Transfer-Encoding has no body. */
		if (h->flags & HH_CHUNKED) {
			s->state = HS_CHUNK;
		} else if (h->cl) {
			s->state = HS_BODY;
			s->left = h->cl;
		}
		return 0;
	}
	/* An answer travels against the requests, to a request waiting for it. */
	if (c->req_dir != (in ? 2 : 1) || !c->count) {
		http_untrack(c, NET_HTTP_UT_PIPELINE);
		return 1;
	}
	__u32 st = h->status;

	if (st < 200 && st != 101)
		return 0; /* interim (100 Continue, 103): the final answer follows, no body */
	struct http_req *q = &c->q[c->head & (HTTP_PIPELINE - 1)];

	http_end(q, c->req_dir - 1, st, now);
	c->head++;
	c->count--;
	if (st == 101) {
		c->off = 1; /* another protocol follows: nothing more to count here */
		return 1;
	}
	if (q->nobody || st == 204 || st == 304)
		return 0;
	if (h->flags & HH_BAD) {
		http_untrack(c, NET_HTTP_UT_BODY);
		return 1;
	}
	if (h->flags & HH_CHUNKED) {
		s->state = HS_CHUNK;
	} else if (h->flags & HH_CL) {
		if (h->cl) {
			s->state = HS_BODY;
			s->left = h->cl;
		}
	} else {
		s->state = HS_DONE; /* the body ends with the connection */
	}
	return 0;
}

/* `len` payload bytes of stream `in` (received) or sent, starting at sequence number `seq`:
 * at `off0` of the skb, or at user address `ubuf`. */
static __always_inline void http_data(struct http_conn *c, int in, __u32 seq, __u32 len,
				      struct __sk_buff *skb, __u32 off0, __u64 ubuf)
{
	struct http_stream *s = &c->s[in ? 0 : 1];
	__s32 d = (__s32)(seq - s->next);
	__u32 pos = 0;

	if (c->off)
		return;
	if (d < 0) {
		/* a retransmission: skip what was seen */
		if ((__u32)-d >= len)
			return;
		pos = -d;
	} else if (d > 0) {
		/* bytes never seen (a lost or reordered segment, a sendfile() in syscalls mode):
		 * harmless inside a body, whose bytes are only counted */
		if ((s->state == HS_BODY || s->state == HS_DATA) && (__u64)d <= s->left) {
			s->left -= d;
		} else if (s->state != HS_DONE) {
			http_untrack(c, NET_HTTP_UT_GAP);
			return;
		}
	}
	s->next = seq + len;
	if (s->state == HS_DONE)
		return;

	__u64 now = bpf_ktime_get_ns();

	for (int i = 0; i < HTTP_STEPS; i++) {
		__u32 st = s->state;

		if (st == HS_BODY || st == HS_DATA) {
			__u64 k = s->left < len - pos ? s->left : len - pos;

			pos += k;
			s->left -= k;
			if (s->left)
				return;
			st = st == HS_BODY ? HS_HEAD : HS_CHUNK;
			s->state = st;
		}
		if (pos >= len)
			return;
		struct http_hdr h = {};
		__u32 kind = st == HS_CHUNK ? HF_CHUNK : st == HS_TRAILER ? HF_TRAILER : HF_HEAD;
		int r = skb ? http_frame_skb(skb, off0 + pos, len - pos, &h, kind)
			    : http_frame_user(ubuf, pos, len - pos, &h, kind);

		if (r <= 0) {
			http_untrack(c, st == HS_HEAD ? NET_HTTP_UT_HEAD : NET_HTTP_UT_BODY);
			return;
		}
		if (st == HS_CHUNK) {
			if (h.cl) {
				s->left = h.cl + 2; /* data and its CRLF */
				s->state = HS_DATA;
			} else {
				s->state = HS_TRAILER;
			}
		} else if (st == HS_TRAILER) {
			s->state = HS_HEAD;
		} else if (http_message(c, s, in, &h, skb, ubuf, off0 + pos, len - pos, now)) {
			return;
		}
		pos += h.len;
	}
	/* More messages or chunks in one payload than followed per call. */
	if (s->state == HS_BODY || s->state == HS_DATA) {
		__u64 k = s->left < len - pos ? s->left : len - pos;

		pos += k;
		s->left -= k;
		if (!s->left)
			s->state = s->state == HS_BODY ? HS_HEAD : HS_CHUNK;
	}
	if (pos < len)
		http_untrack(c, NET_HTTP_UT_BODY);
}

/* http_data() for user memory (syscalls source), global: the readv/writev loop calls it once per
 * buffer, and the verifier checks it once. seqlen: sequence number << 32 | length. */
__attribute__((noinline)) int http_data_user(struct http_conn *c, __u64 seqlen, __u32 in,
					     __u64 ubuf)
{
	if (!c)
		return 0;
	if (in)
		http_data(c, 1, seqlen >> 32, (__u32)seqlen, NULL, 0, ubuf);
	else
		http_data(c, 0, seqlen >> 32, (__u32)seqlen, NULL, 0, ubuf);
	return 0;
}

/* A request line at the start of a payload of a connection not followed yet? */
static __always_inline int http_opens(struct __sk_buff *skb, __u64 ubuf, __u32 off, __u32 len)
{
	char b[16] = {};

	if (len < 16 || http_load(skb, ubuf, off, b, 16))
		return 0;
	return b[0] >= 'A' && b[0] <= 'Z' && http_method(b) >= 0;
}

#define HTTP_IOVS 8 /* buffers of a readv/writev followed; bytes past them count as not seen */

/* Payload of a read (in) or write on fd, from the syscall (--net-http syscalls): `total` bytes
 * moved, at `buf`, or (vec: readv/writev) in the buffers of the iovec array at `buf`. */
static __always_inline void http_payload(__u32 nr, __u32 fd, __u64 buf, long total, int vec)
{
	int in = nr == NR_READ || nr == NR_RECVFROM || nr == NR_READV;
	struct sock *sk = tcp_sock_of_fd(fd);
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = total };

	if (!sk)
		return;
	if (vec && bpf_probe_read_user(&iov, sizeof(iov), (const void *)buf))
		return;
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	__u64 key = (__u64)sk;
	/* Stream positions after the call: what the application has read and written. */
	__u32 copied = BPF_CORE_READ(tp, copied_seq), written = BPF_CORE_READ(tp, write_seq);
	__u32 rcv_nxt = BPF_CORE_READ(tp, rcv_nxt);
	unsigned long flags = BPF_CORE_READ(sk, __sk_common.skc_flags);

	/* A read that reached the peer's FIN moved copied_seq past it too: not a payload byte. */
	if ((flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) && copied == rcv_nxt)
		copied--;
	__u32 seq = (in ? copied : written) - (__u32)total;
	struct http_conn *c = bpf_map_lookup_elem(&net_http_conns, &key);

	if (!c) {
		if (!http_opens(NULL, (__u64)iov.iov_base, 0,
				iov.iov_len < total ? iov.iov_len : total))
			return;
		__u32 zero = 0;
		struct http_conn *init = bpf_map_lookup_elem(&net_http_conn_zero, &zero);

		if (!init)
			return;
		bpf_map_update_elem(&net_http_conns, &key, init, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&net_http_conns, &key);
		if (!c) {
			bump(NET_LOST_KEYS, 1);
			return;
		}
		/* The request is the first byte either way: nothing read before it, nothing
		 * written (snd_una - bytes_acked is the first sequence number, give or take the
		 * SYN, which bytes_acked counts on one side only). */
		__u64 received = BPF_CORE_READ(tp, bytes_received);
		__u32 base = BPF_CORE_READ(tp, snd_una) - (__u32)BPF_CORE_READ(tp, bytes_acked);
		__u64 consumed = received - (rcv_nxt - copied);

		if (consumed != (in ? (__u64)total : 0) ||
		    written - (in ? 0 : (__u32)total) - base > 1) {
			http_untrack(c, NET_HTTP_UT_MIDSTREAM);
			return;
		}
		c->s[0].next = in ? seq : copied;
		c->s[1].next = in ? written : seq;
	}
	if (!vec) {
		http_data_user(c, (__u64)seq << 32 | (__u32)total, in, buf);
		return;
	}
	for (int i = 0; i < HTTP_IOVS && total > 0; i++) {
		if (i && bpf_probe_read_user(&iov, sizeof(iov), (const void *)(buf + i * sizeof(iov))))
			return;
		__u32 l = iov.iov_len < total ? iov.iov_len : total;

		if (l)
			http_data_user(c, (__u64)seq << 32 | l, in, (__u64)iov.iov_base);
		seq += l;
		total -= l;
	}
}

#define TCP_LISTEN 10

/* Payload of a TCP segment of the target's sockets (cgroup_skb: the packet from its IP header;
 * `off`: where the payload starts, found by pkt()). */
static __always_inline void http_skb(struct __sk_buff *skb, int in, __u32 off)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct bpf_sock *sk = skb ? skb->sk : NULL;

	if (!sk)
		return;
	sk = bpf_sk_fullsock(sk);
	if (!sk || sk->state == TCP_LISTEN)
		return;
	__u32 len = skb->len - off, l4, seq;
	__u8 vhl = 0;
	__be32 nseq = 0;

	if (data + 1 <= end)
		vhl = *(__u8 *)data;
	else if (bpf_skb_load_bytes(skb, 0, &vhl, 1))
		return;
	l4 = (vhl >> 4) == 4 ? (vhl & 0xf) * 4 : 40;
	if (l4 < 64 && data + l4 + 8 <= end)
		__builtin_memcpy(&nseq, data + l4 + 4, 4);
	else if (bpf_skb_load_bytes(skb, l4 + 4, &nseq, 4))
		return;
	seq = bpf_ntohl(nseq);

	struct http_conn *c = bpf_sk_storage_get(&net_http_sk, sk, 0, 0);

	if (!c) {
		if (!http_opens(skb, 0, off, len))
			return;
		struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);

		if (!tp)
			return;
		c = bpf_sk_storage_get(&net_http_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!c) {
			bump(NET_LOST_KEYS, 1);
			return;
		}
		/* The request is the connection's first byte: nothing received before it (the
		 * cgroup_skb hook runs before TCP takes a received segment in), nothing sent
		 * (snd_una - bytes_acked is the first sequence number, give or take the SYN). */
		__u32 base = tp->snd_una - (__u32)tp->bytes_acked;
		int fresh = in ? tp->bytes_received == 0 && seq == tp->rcv_nxt &&
				     tp->snd_nxt == tp->snd_una && tp->snd_una - base <= 1
			       : tp->bytes_received == 0 && seq == tp->snd_nxt && seq - base <= 1;

		if (!fresh) {
			http_untrack(c, NET_HTTP_UT_MIDSTREAM);
			return;
		}
		c->s[0].next = in ? seq : tp->rcv_nxt;
		c->s[1].next = in ? tp->snd_nxt : seq;
	}
	http_data(c, in, seq, len, skb, off, 0);
}

/* ---- failed connect / bind / listen ---- */

static __always_inline void net_error(long nr, long ret)
{
	if (ret >= 0 || ret < -4095 || ret == -EINPROGRESS)
		return;
	if (nr != NR_CONNECT && nr != NR_BIND && nr != NR_LISTEN)
		return;
	if (!sidecar_in_target())
		return;

	struct net_error_key k = {
		.kind = nr == NR_CONNECT ? NET_ERR_CONNECT : NET_ERR_BIND,
		.err = (__u32)(-ret),
	};

	hash_add(&net_errors, &k, 1);
}

/* Default hook for the errors: the exit tracepoints of connect, bind and listen only. */
SEC("tracepoint/syscalls/sys_exit_connect")
int net_sys_exit_error(struct sidecar_sys_exit *ctx)
{
	net_error(ctx->nr, ctx->ret);
	return 0;
}

/* raw_tp args: ctx[0] = struct pt_regs *, ctx[1] = return value. Runs for every syscall of the
 * host: attached only for `--net-http syscalls` (payload calls finish here) or without tracefs. */
SEC("raw_tp/sys_exit")
int net_sys_exit(unsigned long long *ctx)
{
	long ret = (long)ctx[1];
	/* A payload call of the target in flight? Only its threads carry this storage; for every
	 * other task the lookup returns NULL at once. */
	struct http_call *hc = http_enabled && http_syscalls ? bpf_task_storage_get(&net_http_calls,
							    bpf_get_current_task_btf(), 0, 0)
					     : NULL;

	if (hc && hc->nr1) {
		__u32 nr = hc->nr1 - 1, fd = hc->fd;
		__u64 buf = hc->buf;

		hc->nr1 = 0;
		/* readv/writev: Node.js writes its answers with writev, nginx its heads and chunks */
		if (ret > 0)
			http_payload(nr, fd, buf, ret, nr == NR_READV || nr == NR_WRITEV);
	}
	/* Successful calls (nearly all) leave before the number is read. */
	if (ret >= 0 || ret < -4095 || ret == -EINPROGRESS)
		return 0;

	struct pt_regs *regs = (struct pt_regs *)ctx[0];

	net_error(BPF_CORE_READ(regs, orig_ax), ret);
	return 0;
}
