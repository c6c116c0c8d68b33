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

/* Filters other than a cgroup (tree, pid namespace) know tasks, not sockets: for them the
 * current task decides, which is right in process context and may be wrong in softirq
 * (documented). */
static __always_inline int sk_slot_by_task(void)
{
	struct sidecar_modes *m = sidecar_get_modes();

	if (!m || (!m->tree_slots && !m->pidns_slot))
		return -1;
	return sidecar_slot();
}

/* The slot of the target the socket belongs to: sockets carry their creator's cgroup
 * (accepted sockets inherit the listener's). */
static __always_inline int sk_slot(const struct sock *sk)
{
	int s;

	if (!sk)
		return -1;
	s = sidecar_cgroup_slot(BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id));
	return s >= 0 ? s : sk_slot_by_task();
}

static __always_inline int sk_in_target(const struct sock *sk)
{
	return sk_slot(sk) >= 0;
}

/* sk_slot() for a BTF-typed socket (tp_btf): plain loads instead of probe reads. */
static __always_inline int sk_slot_btf(const struct sock *sk)
{
	struct cgroup *cg = sk->sk_cgrp_data.cgroup;
	int s = cg ? sidecar_cgroup_slot(cg->kn->id) : -1;

	return s >= 0 ? s : sk_slot_by_task();
}

static __always_inline int sk_in_target_btf(const struct sock *sk)
{
	return sk_slot_btf(sk) >= 0;
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
#include "net_http.bpf.h"
#include "net_http_pair.bpf.h"

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
