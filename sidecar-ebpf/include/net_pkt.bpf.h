/* Network family, packet side: packets/bytes by type, DNS, packet capture (cgroup_skb on the
 * target's cgroup, or tc on every interface of the target's network namespace with
 * --net-mode netns), and TCP connection events. Included by net.bpf.c after its maps and helpers
 * (bump(), struct conn, net_conns); kept in its own file so the packet path and the syscall/HTTP
 * path can change independently. */
#ifndef NET_PKT_BPF_H
#define NET_PKT_BPF_H

/* Set at load (--net-events): connection events on the ring buffer. */
const volatile __u8 events_enabled = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NET_PKT_SLOTS);
	__type(key, __u32);
	__type(value, struct net_pkt_stats);
} net_packets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NET_PKT_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} net_pkt_counters SEC(".maps");

/* [0, NET_DNS_QTYPES) queries by qtype, then responses by rcode. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NET_DNS_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} net_dns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct syscall_stats);
} net_dns_hist SEC(".maps");

/* A query waiting for its answer. Key: the client's port and the DNS id (a resolver picks a new
 * id and usually a new port per query). LRU: queries that are never answered cannot fill it. */
struct dns_key {
	__u16 port;
	__u16 id;
	__u32 proto;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct dns_key);
	__type(value, __u64);
} net_dns_pending SEC(".maps");

/* Capture switch: enabled only while a /debug/pcap request is open. An array lookup is inlined
 * by the verifier, so a closed capture costs one load and one compare per packet. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct net_pcap_cfg);
} net_pcap_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} net_pcap_ring SEC(".maps");

struct pcap_rec {
	struct net_pcap_hdr h;
	__u8 data[NET_PCAP_SNAP_MAX];
};

/* Scratch space to build a record (too big for the stack); one per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pcap_rec);
} net_pcap_scratch SEC(".maps");

struct pcap_rate {
	__u64 second;
	__u64 n;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pcap_rate);
} net_pcap_rate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} net_events SEC(".maps");

static __always_inline void pkt_bump(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&net_pkt_counters, &idx);

	if (c)
		*c += 1;
}

/* ---- DNS ---- */

static __always_inline __u32 dns_qtype_slot(__u16 t)
{
	switch (t) {
	case 1: return 0;   /* A */
	case 28: return 1;  /* AAAA */
	case 5: return 2;   /* CNAME */
	case 15: return 3;  /* MX */
	case 16: return 4;  /* TXT */
	case 12: return 5;  /* PTR */
	case 33: return 6;  /* SRV */
	case 2: return 7;   /* NS */
	case 6: return 8;   /* SOA */
	case 255: return 9; /* ANY */
	}
	return 10;
}

static __always_inline void dns_count(__u32 slot)
{
	__u64 *c = bpf_map_lookup_elem(&net_dns, &slot);

	if (c)
		*c += 1;
}

/* A DNS message starts at `off`. Queries are counted once, when first seen (on loopback, or
 * with client and server both in the target, the same datagram passes egress then ingress: the
 * pending entry tells the second sighting apart). Answers are counted when their query was seen,
 * which is also what gives them a duration. */
static __always_inline void dns_message(struct __sk_buff *skb, __u32 off, __u16 client_port,
					__u32 proto)
{
	struct {
		__be16 id, flags, qd, an;
	} h;

	if (bpf_skb_load_bytes(skb, off, &h, sizeof(h))) {
		pkt_bump(NET_DNS_MALFORMED);
		return;
	}
	__u16 flags = bpf_ntohs(h.flags);
	struct dns_key k = { .port = client_port, .id = bpf_ntohs(h.id), .proto = proto };
	__u64 now = bpf_ktime_get_ns();

	if (!(flags & 0x8000)) {
		if (bpf_map_lookup_elem(&net_dns_pending, &k))
			return;
		/* qtype of the first question: walk the name's labels (at most 63 bytes each, 255 in
		 * all; a pointer ends it, which a question normally never has). */
		__u32 pos = off + 12;
		__u16 qtype = 0;
		__u8 l = 0;

		if (!bpf_ntohs(h.qd))
			goto counted;
		for (int i = 0; i < 64; i++) {
			if (bpf_skb_load_bytes(skb, pos, &l, 1))
				goto counted;
			if (l == 0) {
				pos += 1;
				break;
			}
			if ((l & 0xc0) == 0xc0) {
				pos += 2;
				break;
			}
			pos += (__u32)(l & 0x3f) + 1;
		}
		if (bpf_skb_load_bytes(skb, pos, &qtype, 2) == 0)
			qtype = bpf_ntohs(qtype);
counted:
		dns_count(dns_qtype_slot(qtype));
		bpf_map_update_elem(&net_dns_pending, &k, &now, BPF_ANY);
		return;
	}
	__u64 *start = bpf_map_lookup_elem(&net_dns_pending, &k);

	if (!start)
		return;
	__u64 d = now - *start;
	__u32 rcode = flags & 0xf, zero = 0;

	bpf_map_delete_elem(&net_dns_pending, &k);
	dns_count(NET_DNS_QTYPES + (rcode <= 5 ? rcode : 6));
	struct syscall_stats *hs = bpf_map_lookup_elem(&net_dns_hist, &zero);

	if (hs) {
		hs->calls++;
		hs->time_ns += d;
		hs->hist[sidecar_hist_bucket(d)]++;
	}
}

/* ---- packet capture ---- */

static __always_inline void pcap(struct __sk_buff *skb, __u32 dir, struct net_pcap_cfg *cfg)
{
	__u32 zero = 0;
	__u64 now = bpf_ktime_get_ns();
	struct pcap_rate *r = bpf_map_lookup_elem(&net_pcap_rate, &zero);

	if (!r)
		return;
	if (r->second != now / 1000000000ULL) {
		r->second = now / 1000000000ULL;
		r->n = 0;
	}
	if (++r->n > cfg->max_pps) {
		pkt_bump(NET_PCAP_RATE_DROPPED);
		return;
	}
	struct pcap_rec *rec = bpf_map_lookup_elem(&net_pcap_scratch, &zero);

	if (!rec)
		return;
	__u32 len = skb->len, cap = len;

	if (cap > cfg->snaplen)
		cap = cfg->snaplen;
	if (cap > NET_PCAP_SNAP_MAX)
		cap = NET_PCAP_SNAP_MAX;
	if (cap < 1)
		return;
	rec->h.ts_ns = now;
	rec->h.len = len;
	rec->h.caplen = cap;
	rec->h.dir = dir;
	if (bpf_skb_load_bytes(skb, 0, rec->data, cap))
		return;
	if (bpf_ringbuf_output(&net_pcap_ring, rec, sizeof(rec->h) + cap, 0))
		pkt_bump(NET_PCAP_DROPPED);
	else
		pkt_bump(NET_PCAP_CAPTURED);
}

/* ---- packets, bytes, DNS, capture: one pass per packet ---- */

/* `l3` is where the IP header starts: 0 for cgroup_skb (no link header), ETH_HLEN for tc.
 * Headers are read in place (direct packet access) when they are in the linear part, which is
 * the rule for locally built and GRO'd packets; otherwise through the load helper. Returns where
 * the payload of a TCP segment starts (0: not TCP, or no payload), for the HTTP recognition. */
static __always_inline __u32 pkt(struct __sk_buff *skb, __u32 dir, __u32 l3)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u8 ip[10] = {};
	__u32 fam = 2, p = 4, l4 = 0, payload = 0;
	__u8 vhl, proto = 0;

	if (data + l3 + 10 <= end)
		__builtin_memcpy(ip, data + l3, 10);
	else if (bpf_skb_load_bytes(skb, l3, ip, 10))
		goto count;
	vhl = ip[0];
	if ((vhl >> 4) == 4) {
		fam = 0;
		proto = ip[9];
		l4 = l3 + (vhl & 0xf) * 4;
	} else if ((vhl >> 4) == 6) {
		fam = 1;
		/* next header of the fixed header; extension headers count as other */
		proto = ip[6];
		l4 = l3 + 40;
	}
	if (fam != 2) {
		if (proto == 6)
			p = 0;
		else if (proto == 17)
			p = 1;
		else if (proto == 1 && fam == 0)
			p = 2;
		else if (proto == 58 && fam == 1)
			p = 3;
	}
count:;
	/* One GSO/GRO skb is several packets on the wire, each with its own headers: count those
	 * (gso_segs), so a capture where the segments travel agrees packet for packet. */
	__u32 segs = skb->gso_segs > 1 ? skb->gso_segs : 1, hdr = l4 > l3 ? l4 - l3 : 0;

	if (p <= 1) {
		/* ports, and for TCP the data offset (byte 12) */
		__u8 h[13] = {};

		if (l4 < 256 && data + l4 + 13 <= end)
			__builtin_memcpy(h, data + l4, 13);
		else if (p == 0)
			bpf_skb_load_bytes(skb, l4, h, 13);
		else
			bpf_skb_load_bytes(skb, l4, h, 4);
		__u16 sport = (h[0] << 8) | h[1], dport = (h[2] << 8) | h[3];

		if (p == 0) {
			__u32 pl = l4 + (h[12] >> 4) * 4;

			payload = skb->len > pl ? pl : 0;
			hdr = pl - l3;
		} else {
			hdr += 8;
		}
		if (sport == 53 || dport == 53) {
			__u16 client = sport == 53 ? dport : sport;

			/* TCP: a message starting a segment (2-byte length prefix, then the header);
			 * messages split across segments or several per segment are only counted
			 * when one starts a segment. */
			if (p == 1)
				dns_message(skb, l4 + 8, client, 17);
			else if (payload && skb->len >= payload + 2 + 12)
				dns_message(skb, payload + 2, client, 6);
		}
	}

	__u32 idx = dir * (NET_FAMILIES * NET_PROTOS) + fam * NET_PROTOS + p;
	struct net_pkt_stats *s = bpf_map_lookup_elem(&net_packets, &idx);

	if (s) {
		s->packets += segs;
		s->bytes += skb->len - l3 + (__u64)(segs - 1) * (hdr & 0xffff);
	}

	__u32 zero = 0;
	struct net_pcap_cfg *cfg = bpf_map_lookup_elem(&net_pcap_cfg, &zero);

	if (cfg && cfg->enabled)
		pcap(skb, dir, cfg);
	return payload;
}

/* No sidecar_in_target() here: the program is attached to the target's cgroup only, and runs
 * in softirq where the current task is unrelated. Always return 1: count, never drop. */
SEC("cgroup_skb/ingress")
int net_ingress(struct __sk_buff *skb)
{
	__u32 payload = pkt(skb, 0, 0);

	if (http_enabled && !http_syscalls && payload)
		http_skb(skb, 1, payload);
	return 1;
}

SEC("cgroup_skb/egress")
int net_egress(struct __sk_buff *skb)
{
	__u32 payload = pkt(skb, 1, 0);

	if (http_enabled && !http_syscalls && payload)
		http_skb(skb, 0, payload);
	return 1;
}

#define TC_ACT_OK 0
#define ETH_HLEN 14

/* --net-mode netns: attached to every interface of the target's network namespace, so the
 * attachment is the filter. tc ingress = into the namespace. Never changes a packet's fate. */
SEC("classifier")
int net_tc_ingress(struct __sk_buff *skb)
{
	pkt(skb, 0, ETH_HLEN);
	return TC_ACT_OK;
}

SEC("classifier")
int net_tc_egress(struct __sk_buff *skb)
{
	pkt(skb, 1, ETH_HLEN);
	return TC_ACT_OK;
}

/* ---- connection events (--net-events) ---- */

/* Who connected or accepted a socket, while it lives: learnt in process context (connect(), the
 * return of accept()), used by the events fired later in softirq. Only with --net-events. */
struct conn_owner {
	__u64 accepted; /* accept() returned (0: not yet) */
	__u32 pid;
	__u32 pad;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct conn_owner);
} net_conn_owners SEC(".maps");

static __always_inline void ev_addrs(const struct sock *sk, struct net_conn_event *e)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	e->family = family;
	/* inet_sport, not skc_num: the bound port is released (skc_num = 0) before the final
	 * state change to CLOSE, the source port of the connection stays. */
	e->lport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	e->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET) {
		__be32 a = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);

		__builtin_memcpy(e->laddr, &a, 4);
		a = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(e->raddr, &a, 4);
	} else {
		BPF_CORE_READ_INTO(&e->laddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&e->raddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
}

/* Remember the current task as the socket's owner (connect: SYN_SENT runs in connect()). */
static __always_inline void ev_own(__u64 key)
{
	struct conn_owner o = { .pid = bpf_get_current_pid_tgid() >> 32 };

	bpf_get_current_comm(o.comm, sizeof(o.comm));
	bpf_map_update_elem(&net_conn_owners, &key, &o, BPF_ANY);
}

static __always_inline void ev_emit(const struct sock *sk, __u16 kind, __u64 duration)
{
	__u64 key = (__u64)sk;
	struct net_conn_event *e = bpf_ringbuf_reserve(&net_events, sizeof(*e), 0);

	if (!e) {
		pkt_bump(NET_EVENTS_LOST);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->kind = kind;
	e->duration_ns = duration;
	ev_addrs(sk, e);
	struct conn_owner *o = bpf_map_lookup_elem(&net_conn_owners, &key);

	if (o) {
		e->pid = o->pid;
		__builtin_memcpy(e->comm, o->comm, sizeof(e->comm));
	}
	if (kind == NET_EV_CLOSE) {
		struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);

		if (tp) {
			__u64 received = tp->bytes_received;
			unsigned long flags = BPF_CORE_READ(sk, __sk_common.skc_flags);

			/* same accounting as the per-peer bytes: the peer's FIN is not payload */
			if ((flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) &&
			    received > 0)
				received--;
			e->sent = tp->bytes_sent - tp->bytes_retrans;
			e->received = received;
		}
		bpf_map_delete_elem(&net_conn_owners, &key);
	}
	bpf_ringbuf_submit(e, 0);
}

#define NR_ACCEPT 43
#define NR_ACCEPT4 288
/* accept()/accept4() returned a connection: the accepting process is known only here (the
 * connection was established in softirq). Attached with --net-events only, to the exit tracepoints
 * of accept and accept4 (or, without tracefs, to raw sys_exit below). */
static __always_inline void ev_accepted(long nr, long ret)
{
	if (ret < 0 || (nr != NR_ACCEPT && nr != NR_ACCEPT4))
		return;
	if (!sidecar_in_target())
		return;
	struct sock *sk = tcp_sock_of_fd((__u32)ret);

	if (!sk)
		return;
	__u64 key = (__u64)sk, now = bpf_ktime_get_ns(), since = 0;
	struct conn *c = bpf_map_lookup_elem(&net_conns, &key);

	if (c)
		since = now - c->start;
	ev_own(key);
	ev_emit(sk, NET_EV_ACCEPT, since);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int net_events_accept(struct sidecar_sys_exit *ctx)
{
	ev_accepted(ctx->nr, ctx->ret);
	return 0;
}

SEC("raw_tp/sys_exit")
int net_events_sys_exit(unsigned long long *ctx)
{
	long ret = (long)ctx[1];

	if (ret < 0)
		return 0;
	struct pt_regs *regs = (struct pt_regs *)ctx[0];

	ev_accepted(BPF_CORE_READ(regs, orig_ax), ret);
	return 0;
}

#endif
