/* Network family, packet side: packets/bytes by type, DNS, packet capture (cgroup_skb on the
 * target's cgroup, or tc on every interface of the target's network namespace with
 * --net-mode netns), and TCP connection events. Included by net.bpf.c after its maps and helpers
 * (bump(), struct conn, net_conns); kept in its own file so the packet path and the syscall/HTTP
 * path can change independently. */
#ifndef NET_PKT_BPF_H
#define NET_PKT_BPF_H

/* Per target (slot), see SIDECAR_SLOT_MAP. */
struct net_packets_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NET_PKT_SLOTS);
	SIDECAR_INNER_KV(__u32, struct net_pkt_stats);
};
SIDECAR_SLOT_MAP(net_packets, struct net_packets_map);

struct net_pkt_counters_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NET_PKT_COUNTERS);
	SIDECAR_INNER_KV(__u32, __u64);
};
SIDECAR_SLOT_MAP(net_pkt_counters, struct net_pkt_counters_map);

/* [0, NET_DNS_QTYPES) queries by qtype, then responses by rcode. */
struct net_dns_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NET_DNS_SLOTS);
	SIDECAR_INNER_KV(__u32, __u64);
};
SIDECAR_SLOT_MAP(net_dns, struct net_dns_map);

struct net_dns_hist_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	SIDECAR_INNER_KV(__u32, struct syscall_stats);
};
SIDECAR_SLOT_MAP(net_dns_hist, struct net_dns_hist_map);

/* A query waiting for its answer. Key: the client's port and the DNS id (a resolver picks a new
 * id and usually a new port per query). LRU: queries that are never answered cannot fill it. */
struct dns_key {
	__u16 port;
	__u16 id;
	__u32 proto;
};

/* DNS queries awaiting their answer (LRU: preallocated, so per slot 256, 24 KiB). */
struct net_dns_pending_map {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 256);
	SIDECAR_INNER_KV(struct dns_key, __u64);
};
SIDECAR_SLOT_MAP(net_dns_pending, struct net_dns_pending_map);

/* Capture switch: enabled only while a /debug/pcap request of the slot's sidecar is open; the
 * slot has it (and the ring and rate below) only with --allow-pcap. Array lookups are inlined by
 * the verifier, so a closed capture costs a few loads and compares per packet. */
struct net_pcap_cfg_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	SIDECAR_INNER_KV(__u32, struct net_pcap_cfg);
};
SIDECAR_SLOT_MAP(net_pcap_cfg, struct net_pcap_cfg_map);

struct net_pcap_ring_map {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
};
SIDECAR_SLOT_MAP(net_pcap_ring, struct net_pcap_ring_map);

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

struct net_pcap_rate_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	SIDECAR_INNER_KV(__u32, struct pcap_rate);
};
SIDECAR_SLOT_MAP(net_pcap_rate, struct net_pcap_rate_map);

/* Connection events, the slot's only with --net-events. */
struct net_events_map {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
};
SIDECAR_SLOT_MAP(net_events, struct net_events_map);

static __always_inline void pkt_bump(__u32 slot, __u32 idx)
{
	void *m = sidecar_slot_map(&net_pkt_counters, slot);
	__u64 *c = m ? bpf_map_lookup_elem(m, &idx) : NULL;

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

static __always_inline void dns_count(__u32 slot, __u32 idx)
{
	void *m = sidecar_slot_map(&net_dns, slot);
	__u64 *c = m ? bpf_map_lookup_elem(m, &idx) : NULL;

	if (c)
		*c += 1;
}

/* A DNS message starts at `off`. Queries are counted once, when first seen (on loopback, or
 * with client and server both in the target, the same datagram passes egress then ingress: the
 * pending entry tells the second sighting apart). Answers are counted when their query was seen,
 * which is also what gives them a duration. */
static __always_inline void dns_message(struct __sk_buff *skb, __u32 off, __u16 client_port,
					__u32 proto, __u32 slot)
{
	struct {
		__be16 id, flags, qd, an;
	} h;
	void *pending = sidecar_slot_map(&net_dns_pending, slot);

	if (!pending)
		return;
	if (bpf_skb_load_bytes(skb, off, &h, sizeof(h))) {
		pkt_bump(slot, NET_DNS_MALFORMED);
		return;
	}
	__u16 flags = bpf_ntohs(h.flags);
	struct dns_key k = { .port = client_port, .id = bpf_ntohs(h.id), .proto = proto };
	__u64 now = bpf_ktime_get_ns();

	if (!(flags & 0x8000)) {
		if (bpf_map_lookup_elem(pending, &k))
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
		dns_count(slot, dns_qtype_slot(qtype));
		bpf_map_update_elem(pending, &k, &now, BPF_ANY);
		return;
	}
	__u64 *start = bpf_map_lookup_elem(pending, &k);

	if (!start)
		return;
	__u64 d = now - *start;
	__u32 rcode = flags & 0xf, zero = 0;
	void *hists = sidecar_slot_map(&net_dns_hist, slot);

	bpf_map_delete_elem(pending, &k);
	dns_count(slot, NET_DNS_QTYPES + (rcode <= 5 ? rcode : 6));
	struct syscall_stats *hs = hists ? bpf_map_lookup_elem(hists, &zero) : NULL;

	if (hs) {
		hs->calls++;
		hs->time_ns += d;
		hs->hist[sidecar_hist_bucket(d)]++;
	}
}

/* ---- packet capture ---- */

static __always_inline void pcap(struct __sk_buff *skb, __u32 dir, struct net_pcap_cfg *cfg,
				 __u32 slot)
{
	__u32 zero = 0;
	__u64 now = bpf_ktime_get_ns();
	void *rates = sidecar_slot_map(&net_pcap_rate, slot);
	void *ring = sidecar_slot_map(&net_pcap_ring, slot);
	struct pcap_rate *r = rates ? bpf_map_lookup_elem(rates, &zero) : NULL;

	if (!r || !ring)
		return;
	if (r->second != now / 1000000000ULL) {
		r->second = now / 1000000000ULL;
		r->n = 0;
	}
	if (++r->n > cfg->max_pps) {
		pkt_bump(slot, NET_PCAP_RATE_DROPPED);
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
	if (bpf_ringbuf_output(ring, rec, sizeof(rec->h) + cap, 0))
		pkt_bump(slot, NET_PCAP_DROPPED);
	else
		pkt_bump(slot, NET_PCAP_CAPTURED);
}

/* ---- packets, bytes, DNS, capture: one pass per packet ---- */

/* `l3` is where the IP header starts: 0 for cgroup_skb (no link header), ETH_HLEN for tc.
 * Headers are read in place (direct packet access) when they are in the linear part, which is
 * the rule for locally built and GRO'd packets; otherwise through the load helper. Returns where
 * the payload of a TCP segment starts (0: not TCP, or no payload), for the HTTP recognition. */
static __always_inline __u32 pkt(struct __sk_buff *skb, __u32 dir, __u32 l3, __u32 slot)
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
				dns_message(skb, l4 + 8, client, 17, slot);
			else if (payload && skb->len >= payload + 2 + 12)
				dns_message(skb, payload + 2, client, 6, slot);
		}
	}

	__u32 idx = dir * (NET_FAMILIES * NET_PROTOS) + fam * NET_PROTOS + p;
	void *packets = sidecar_slot_map(&net_packets, slot);
	struct net_pkt_stats *s = packets ? bpf_map_lookup_elem(packets, &idx) : NULL;

	if (s) {
		s->packets += segs;
		s->bytes += skb->len - l3 + (__u64)(segs - 1) * (hdr & 0xffff);
	}

	__u32 zero = 0;
	void *cfgs = sidecar_slot_map(&net_pcap_cfg, slot);
	struct net_pcap_cfg *cfg = cfgs ? bpf_map_lookup_elem(cfgs, &zero) : NULL;

	if (cfg && cfg->enabled)
		pcap(skb, dir, cfg, slot);
	return payload;
}

/* Deepest cgroup level below the root at which a target's cgroup is looked for (a socket of a
 * descendant of the target's cgroup passes its programs too). */
#define NET_CGROUP_LEVELS 8

/* The slot of a packet on a cgroup_skb hook: the one of its socket's cgroup, or (a descendant's
 * socket) of the nearest ancestor that is a target. No sidecar_slot() here: the program runs in
 * softirq, where the current task is unrelated. -1: none (the target is gone). */
static __always_inline int skb_slot(struct __sk_buff *skb)
{
	if (!pkt_slot_lookup)
		return 0;

	__u64 id = bpf_skb_cgroup_id(skb);
	int s = sidecar_cgroup_slot(id);

	if (s >= 0 || !id)
		return s;
	for (int level = 1; level <= NET_CGROUP_LEVELS; level++) {
		__u64 a = bpf_skb_ancestor_cgroup_id(skb, level);

		if (!a || a == id)
			return -1;
		s = sidecar_cgroup_slot(a);
		if (s >= 0)
			return s;
	}
	return -1;
}

/* Always return 1: count, never drop. */
SEC("cgroup_skb/ingress")
int net_ingress(struct __sk_buff *skb)
{
	int slot = skb_slot(skb);

	if (slot < 0)
		return 1;

	__u32 payload = pkt(skb, 0, 0, slot);
	__u64 flags = payload ? slot_flags(slot) : 0;

	if (flags & (SIDECAR_SLOT_NET_HTTP_PACKETS | SIDECAR_SLOT_NET_PROTOS))
		proto_skb(skb, 1, payload, slot, flags);
	return 1;
}

SEC("cgroup_skb/egress")
int net_egress(struct __sk_buff *skb)
{
	int slot = skb_slot(skb);

	if (slot < 0)
		return 1;

	__u32 payload = pkt(skb, 1, 0, slot);
	__u64 flags = payload ? slot_flags(slot) : 0;

	if (flags & (SIDECAR_SLOT_NET_HTTP_PACKETS | SIDECAR_SLOT_NET_PROTOS))
		proto_skb(skb, 0, payload, slot, flags);
	return 1;
}

/* "No opinion": the next program on the hook runs (TCX_NEXT), and at the end the packet goes on
 * as if none were there. TC_ACT_OK (TCX_PASS) would end the chain: programs attached after this
 * one (another sidecar's copy, a CNI's) would never see the packet. */
#define TC_ACT_UNSPEC (-1)
#define ETH_HLEN 14

/* Set at load: the slot of the sidecar that loads the classifiers. Each sidecar with --net-mode
 * netns loads its own copy (not the set's: read-only data is each sidecar's, see `Object::load_on`)
 * and attaches it to the interfaces of its target's network namespace, so the attachment is the
 * filter and the copy knows its slot (a packet on tc ingress has no socket to tell it; two targets
 * sharing one namespace each count all of it, each with its own copy). */
const volatile __u32 tc_slot = 0;

/* --net-mode netns: attached to every interface of the target's network namespace. tc ingress =
 * into the namespace. Never changes a packet's fate. */
SEC("classifier")
int net_tc_ingress(struct __sk_buff *skb)
{
	pkt(skb, 0, ETH_HLEN, tc_slot);
	return TC_ACT_UNSPEC;
}

SEC("classifier")
int net_tc_egress(struct __sk_buff *skb)
{
	pkt(skb, 1, ETH_HLEN, tc_slot);
	return TC_ACT_UNSPEC;
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

/* Per slot, only with --net-events. LRU: the owners of the oldest connections go first. */
struct net_conn_owners_map {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NET_CONNS_MAX);
	SIDECAR_INNER_KV(__u64, struct conn_owner);
};
SIDECAR_SLOT_MAP(net_conn_owners, struct net_conn_owners_map);

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
static __always_inline void ev_own(__u32 slot, __u64 key)
{
	struct conn_owner o = { .pid = bpf_get_current_pid_tgid() >> 32 };
	void *owners = sidecar_slot_map(&net_conn_owners, slot);

	if (!owners)
		return;
	bpf_get_current_comm(o.comm, sizeof(o.comm));
	bpf_map_update_elem(owners, &key, &o, BPF_ANY);
}

static __always_inline void ev_emit(__u32 slot, const struct sock *sk, __u16 kind, __u64 duration)
{
	__u64 key = (__u64)sk;
	void *ring = sidecar_slot_map(&net_events, slot);
	void *owners = sidecar_slot_map(&net_conn_owners, slot);

	if (!ring)
		return;

	struct net_conn_event *e = bpf_ringbuf_reserve(ring, sizeof(*e), 0);

	if (!e) {
		pkt_bump(slot, NET_EVENTS_LOST);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->kind = kind;
	e->duration_ns = duration;
	ev_addrs(sk, e);
	struct conn_owner *o = owners ? bpf_map_lookup_elem(owners, &key) : NULL;

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
		if (owners)
			bpf_map_delete_elem(owners, &key);
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

	int slot = sidecar_slot();

	if (slot < 0 || !(slot_flags(slot) & SIDECAR_SLOT_NET_EVENTS))
		return;
	struct sock *sk = tcp_sock_of_fd((__u32)ret);

	if (!sk)
		return;
	__u64 key = (__u64)sk, now = bpf_ktime_get_ns(), since = 0;
	void *conns = sidecar_slot_map(&net_conns, slot);
	struct conn *c = conns ? bpf_map_lookup_elem(conns, &key) : NULL;

	if (c)
		since = now - c->start;
	ev_own(slot, key);
	ev_emit(slot, sk, NET_EV_ACCEPT, since);
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
