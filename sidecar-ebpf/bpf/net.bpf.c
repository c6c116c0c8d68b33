// SPDX-License-Identifier: GPL-2.0
/* Network family: packets and bytes by direction/family/protocol (cgroup_skb on the target's
 * cgroup), the TCP lifecycle (sock:inet_sock_set_state, tcp:*), failed connect/bind/listen by
 * errno, UDP receive-queue drops. Everything is aggregated here; userspace reads maps at scrape.
 *
 * Targets (slots): every per-target map is a per-slot array of maps (SIDECAR_SLOT_MAP), and each
 * program finds the slot first. cgroup_skb programs are attached to each target's cgroup, so
 * only targets' sockets pass through them; they run in softirq, where `current` is whoever was
 * interrupted, so the slot is the one of the socket's cgroup. The TCP and UDP tracepoints fire
 * in softirq too: same, the cgroup the SOCKET was created in. Only the syscall exits run in the
 * target's own context and use the current task's slot. Options that differ between targets
 * (HTTP source, paths, events) are SIDECAR_SLOT_NET_* flags of the slot. */
#include "sidecar.bpf.h"
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

/* Set at load: 1 on a shared kernel side, where the cgroup_skb programs (one copy for every
 * target) find the slot of each packet from its socket's cgroup; 0 on a private one, whose only
 * target is slot 0 and whose attachment is the filter (no lookup at all). */
const volatile __u8 pkt_slot_lookup = 0;

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

/* Per target (slot), see SIDECAR_SLOT_MAP. The hash tables are not preallocated: a slot's
 * kernel memory is its bucket array plus the entries it holds, not max_entries of them. */
struct net_counters_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NET_COUNTERS);
	SIDECAR_INNER_KV(__u32, __u64);
};
SIDECAR_SLOT_MAP(net_counters, struct net_counters_map);

/* Same layout as the syscall stats: count, sum of ns, log2 buckets. */
struct net_hists_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	SIDECAR_INNER_KV(__u32, struct syscall_stats);
};
SIDECAR_SLOT_MAP(net_hists, struct net_hists_map);

struct net_peers_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NET_PEERS_MAX);
	SIDECAR_INNER_KV(struct net_peer_key, struct net_peer_stats);
};
SIDECAR_SLOT_MAP(net_peers, struct net_peers_map);

struct net_errors_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 256);
	SIDECAR_INNER_KV(struct net_error_key, __u64);
};
SIDECAR_SLOT_MAP(net_errors, struct net_errors_map);

/* Accepted connections by local (listening) port. */
struct net_accepts_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1024);
	SIDECAR_INNER_KV(__u32, __u64);
};
SIDECAR_SLOT_MAP(net_accepts, struct net_accepts_map);

struct conn {
	__u64 start;       /* SYN sent or child socket created */
	__u64 established; /* 0 until the handshake completed */
};

/* Live TCP connections of the target, by socket address. Full: NET_LOST_CONNS. */
struct net_conns_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NET_CONNS_MAX);
	SIDECAR_INNER_KV(__u64, struct conn);
};
SIDECAR_SLOT_MAP(net_conns, struct net_conns_map);

/* The SIDECAR_SLOT_* options of `slot` (0: no such slot). */
static __always_inline __u64 slot_flags(__u32 slot)
{
	struct sidecar_target *t = sidecar_slot_config(slot);

	return t ? t->flags : 0;
}

static __always_inline void bump(__u32 slot, __u32 idx, __u64 n)
{
	void *m = sidecar_slot_map(&net_counters, slot);
	__u64 *c = m ? bpf_map_lookup_elem(m, &idx) : NULL;

	if (c)
		*c += n;
}

static __always_inline void observe(__u32 slot, __u32 which, __u64 ns)
{
	void *m = sidecar_slot_map(&net_hists, slot);
	struct syscall_stats *h = m ? bpf_map_lookup_elem(m, &which) : NULL;

	if (!h)
		return;
	h->calls++;
	h->time_ns += ns;
	h->hist[sidecar_hist_bucket(ns)]++;
}

/* Add n at key in a per-CPU u64 hash (slot's inner map `map`); count a loss when the table is
 * full. */
static __always_inline void hash_add(__u32 slot, void *map, void *key, __u64 n)
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
			bump(slot, NET_LOST_KEYS, 1);
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

/* sk_slot() for a BTF-typed socket (tp_btf): plain loads instead of probe reads. */
static __always_inline int sk_slot_btf(const struct sock *sk)
{
	struct cgroup *cg = sk->sk_cgrp_data.cgroup;
	int s = cg ? sidecar_cgroup_slot(cg->kn->id) : -1;

	return s >= 0 ? s : sk_slot_by_task();
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
static __always_inline void http_skb(struct __sk_buff *skb, int in, __u32 off, __u32 slot,
				     __u64 flags);
/* HTTP/1.x, Redis, PostgreSQL, MySQL: each connection's protocol decided, then its parser
 * (net_proto.bpf.h). */
static __always_inline void proto_skb(struct __sk_buff *skb, int in, __u32 off, __u32 slot,
				      __u64 flags);
/* A socket closed: forget the HTTP state kept for it (syscalls source). */
static __always_inline void http_forget(__u32 slot, __u64 key);

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

static __always_inline void account_close(__u32 slot, const struct sock *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	void *peers = sidecar_slot_map(&net_peers, slot);
	struct net_peer_key k = {};

	if (!tp || !peers)
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
	struct net_peer_stats *s = bpf_map_lookup_elem(peers, &k);

	if (!s) {
		struct net_peer_stats zero = {};

		/* Fails when the table is full (or another CPU inserted first: found below). */
		bpf_map_update_elem(peers, &k, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(peers, &k);
	}
	if (s) {
		s->sent += sent;
		s->received += received;
		s->closed++;
	} else {
		bump(slot, NET_OTHER_SENT, sent);
		bump(slot, NET_OTHER_RECEIVED, received);
		bump(slot, NET_OTHER_CLOSED, 1);
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
	int slot = sk_slot_btf(sk);

	if (slot < 0)
		return 0;
	/* No table: the slot's sidecar does not run this family. */
	void *conns = sidecar_slot_map(&net_conns, slot);

	if (!conns)
		return 0;

	__u64 key = (__u64)sk, now = bpf_ktime_get_ns();
	int events = (slot_flags(slot) & SIDECAR_SLOT_NET_EVENTS) != 0;
	struct conn *c;

	if (new == ST_SYN_SENT || (new == ST_SYN_RECV && old != ST_ESTABLISHED)) {
		struct conn v = { .start = now };

		if (bpf_map_update_elem(conns, &key, &v, BPF_ANY))
			bump(slot, NET_LOST_CONNS, 1);
		if (events && new == ST_SYN_SENT)
			ev_own(slot, key); /* connect() runs here, in the connecting task */
		return 0;
	}
	if (new == ST_ESTABLISHED && (old == ST_SYN_SENT || old == ST_SYN_RECV)) {
		int active = old == ST_SYN_SENT;
		void *accepts = sidecar_slot_map(&net_accepts, slot);

		bump(slot, active ? NET_CONN_ACTIVE : NET_CONN_PASSIVE, 1);
		if (!active && accepts) {
			__u32 port = sk->__sk_common.skc_num;

			hash_add(slot, accepts, &port, 1);
		}
		c = bpf_map_lookup_elem(conns, &key);
		if (c) {
			c->established = now;
			if (active)
				observe(slot, NET_HIST_CONNECT, now - c->start);
			if (events && active)
				ev_emit(slot, sk, NET_EV_CONNECT, now - c->start);
		} else {
			struct conn v = { .start = now, .established = now };

			if (bpf_map_update_elem(conns, &key, &v, BPF_ANY))
				bump(slot, NET_LOST_CONNS, 1);
		}
		return 0;
	}
	if (new == ST_CLOSE) {
		http_forget(slot, key);
		c = bpf_map_lookup_elem(conns, &key);
		if (!c)
			return 0;
		if (c->established) {
			observe(slot, NET_HIST_LIFETIME, now - c->start);
			account_close(slot, sk);
			if (events)
				ev_emit(slot, sk, NET_EV_CLOSE, now - c->start);
		}
		bpf_map_delete_elem(conns, &key);
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
	int slot = full_sock(sk) ? sk_slot(sk) : -1;

	if (slot >= 0)
		bump(slot, NET_RETRANSMITS, 1);
	return 0;
}

/* raw_tp args: ctx[0] = const struct sock * (NULL when no socket matched), ctx[1] = skb,
 * ctx[2] = reason */
SEC("raw_tp/tcp_send_reset")
int net_send_reset(unsigned long long *ctx)
{
	const struct sock *sk = (const struct sock *)ctx[0];
	int slot = full_sock(sk) ? sk_slot(sk) : -1;

	if (slot >= 0)
		bump(slot, NET_RESETS_SENT, 1);
	return 0;
}

/* raw_tp args: ctx[0] = struct sock * */
SEC("raw_tp/tcp_receive_reset")
int net_receive_reset(unsigned long long *ctx)
{
	const struct sock *sk = (const struct sock *)ctx[0];
	int slot = full_sock(sk) ? sk_slot(sk) : -1;

	if (slot >= 0)
		bump(slot, NET_RESETS_RECEIVED, 1);
	return 0;
}

/* raw_tp args: ctx[0] = rc, ctx[1] = struct sock *, ctx[2] = skb */
SEC("raw_tp/udp_fail_queue_rcv_skb")
int net_udp_drop(unsigned long long *ctx)
{
	const struct sock *sk = (const struct sock *)ctx[1];
	int slot = sk_slot(sk);

	if (slot >= 0)
		bump(slot, NET_UDP_DROPS, 1);
	return 0;
}

/* ---- HTTP/1.x: requests and answers followed through each connection's byte streams ---- */
#include "net_http.bpf.h"
#include "net_http_pair.bpf.h"
/* ---- Redis, PostgreSQL, MySQL ---- */
#include "net_proto.bpf.h"
#include "net_tls.bpf.h"

/* ---- failed connect / bind / listen ---- */

static __always_inline void net_error(long nr, long ret)
{
	if (ret >= 0 || ret < -4095 || ret == -EINPROGRESS)
		return;
	if (nr != NR_CONNECT && nr != NR_BIND && nr != NR_LISTEN)
		return;

	int slot = sidecar_slot();
	void *errors = slot >= 0 ? sidecar_slot_map(&net_errors, slot) : NULL;

	if (!errors)
		return;

	struct net_error_key k = {
		.kind = nr == NR_CONNECT ? NET_ERR_CONNECT : NET_ERR_BIND,
		.err = (__u32)(-ret),
	};

	hash_add(slot, errors, &k, 1);
}

/* Default hook for the errors: the exit tracepoints of connect, bind and listen only. */
SEC("tracepoint/syscalls/sys_exit_connect")
int net_sys_exit_error(struct sidecar_sys_exit *ctx)
{
	net_error(ctx->nr, ctx->ret);
	return 0;
}

/* raw_tp args: ctx[0] = struct pt_regs *, ctx[1] = return value. The errors' hook when neither
 * the exit tracepoints (no tracefs) nor the syscalls family's jump slot (where it runs for the
 * targets' syscalls only) can be had: then it runs for every syscall of the host. */
SEC("raw_tp/sys_exit")
int net_sys_exit(unsigned long long *ctx)
{
	long ret = (long)ctx[1];

	/* Successful calls (nearly all) leave before the number is read. */
	if (ret >= 0 || ret < -4095 || ret == -EINPROGRESS)
		return 0;

	struct pt_regs *regs = (struct pt_regs *)ctx[0];

	net_error(BPF_CORE_READ(regs, orig_ax), ret);
	return 0;
}

/* raw_tp args as above. Payload calls finish here (slots with SIDECAR_SLOT_NET_HTTP_SYSCALLS,
 * whose reads and writes net_sys_enter remembers); runs for every syscall of the host, attached
 * once a slot asks for it. Errors are the hooks' above, whatever the HTTP source. */
SEC("raw_tp/sys_exit")
int net_http_sys_exit(unsigned long long *ctx)
{
	long ret = (long)ctx[1];
	/* A payload call of a target in flight? Only its threads carry this storage; for every
	 * other task the lookup returns NULL at once. */
	struct http_call *hc = bpf_task_storage_get(&net_http_calls, bpf_get_current_task_btf(), 0,
						    0);

	if (!hc || !hc->nr1)
		return 0;

	__u32 nr = hc->nr1 - 1, fd = hc->fd;
	__u64 buf = hc->buf;

	hc->nr1 = 0;
	if (ret <= 0)
		return 0;
	/* The slot now, not when the call began (the storage outlives a move to another target). */
	int slot = sidecar_slot();

	if (slot < 0 || !(slot_flags(slot) & SIDECAR_SLOT_NET_HTTP_SYSCALLS))
		return 0;
	/* readv/writev: Node.js writes its answers with writev, nginx its heads and chunks */
	http_payload(slot, nr, fd, buf, ret, nr == NR_READV || nr == NR_WRITEV);
	return 0;
}
