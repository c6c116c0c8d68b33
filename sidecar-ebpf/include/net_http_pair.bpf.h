/* net family, HTTP/1.x part 2: pairing requests with answers and counting them, from both payload
 * sources. Included by sidecar-ebpf/bpf/net.bpf.c only, right after net_http.bpf.h. */
#ifndef NET_HTTP_PAIR_BPF_H
#define NET_HTTP_PAIR_BPF_H

/* ---- pairing and counting ---- */

static __always_inline struct syscall_stats *path_stats(void *paths, struct net_http_path_key *k)
{
	struct syscall_stats *v = bpf_map_lookup_elem(paths, k);
	__u32 zero = 0;

	if (v)
		return v;
	struct syscall_stats *init = bpf_map_lookup_elem(&net_http_zero, &zero);

	if (!init)
		return NULL;
	/* Full: fold this path into the overflow slot. */
	if (bpf_map_update_elem(paths, k, init, BPF_NOEXIST) && !bpf_map_lookup_elem(paths, k)) {
		__builtin_memset(k->path, 0, NET_HTTP_PATH_LEN);
		bpf_map_update_elem(paths, k, init, BPF_NOEXIST);
	}
	return bpf_map_lookup_elem(paths, k);
}

/* The oldest request waiting on connection `c` of target `slot` is answered with status `st`
 * now (direction from c->req_dir). Global: checked once, not once per step of the per-segment
 * loop. */
__attribute__((noinline)) int http_end(struct http_conn *c, __u32 st, __u64 now, __u32 slot)
{
	struct syscall_stats *hs = NULL;

	if (!c)
		return 0;
	struct http_req *p = &c->q[c->head & (HTTP_PIPELINE - 1)];
	__u32 dir = c->req_dir == 2, tls = c->tls != 0;
	__u64 d = now - p->start;
	void *paths = sidecar_slot_map(&net_http_paths, slot);

	/* A slot has the path table with --http-paths only, and then not the two others. */
	if (paths) {
		struct net_http_path_key pk = {
			.dir = dir, .method = p->method, .status = st, .tls = tls
		};

		__builtin_memcpy(pk.path, p->path, NET_HTTP_PATH_LEN);
		hs = path_stats(paths, &pk);
	} else {
		struct net_http_key k = {
			.dir = dir, .method = p->method, .status = st, .tls = tls
		};
		__u32 h = (tls * NET_HTTP_DIRS + dir) * NET_HTTP_METHODS +
			(p->method & (NET_HTTP_METHODS - 1));
		void *reqs = sidecar_slot_map(&net_http_requests, slot);
		void *hists = sidecar_slot_map(&net_http_hists, slot);

		if (reqs)
			hash_add(slot, reqs, &k, 1);
		if (hists)
			hs = bpf_map_lookup_elem(hists, &h);
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
static __always_inline void http_untrack(__u32 slot, struct http_conn *c, __u32 why)
{
	c->off = 1;
	bump(slot, NET_HTTP_UNTRACKED + why, 1);
}

/* A head was followed on stream `s` (received if `in`): queue a request, or pair an answer with
 * the oldest waiting request; then the body's framing. 1: stop reading this payload. */
static __always_inline int http_message(struct http_conn *c, struct http_stream *s, int in,
					struct http_hdr *h, struct __sk_buff *skb, __u64 ubuf,
					__u32 hoff, __u32 avail, __u64 now, __u32 slot,
					int paths)
{
	__u8 dir = in ? 1 : 2; /* req_dir if this is a request */

	if (h->method >= 0) {
		if (!c->req_dir)
			c->req_dir = dir;
		if (c->req_dir != dir || c->count >= HTTP_PIPELINE) {
			http_untrack(slot, c, NET_HTTP_UT_PIPELINE);
			return 1;
		}
		if (h->flags & HH_BAD) {
			http_untrack(slot, c, NET_HTTP_UT_BODY);
			return 1;
		}
		struct http_req *q = &c->q[(c->head + c->count) & (HTTP_PIPELINE - 1)];
		int m = h->method & 7;

		q->start = now;
		q->method = m;
		q->nobody = m == HTTP_HEAD_METHOD;
		if (paths) {
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
		http_untrack(slot, c, NET_HTTP_UT_PIPELINE);
		return 1;
	}
	__u32 st = h->status;

	if (st < 200 && st != 101)
		return 0; /* interim (100 Continue, 103): the final answer follows, no body */
	struct http_req *q = &c->q[c->head & (HTTP_PIPELINE - 1)];

	http_end(c, st, now, slot);
	c->head++;
	c->count--;
	if (st == 101) {
		c->off = 1; /* another protocol follows: nothing more to count here */
		return 1;
	}
	if (q->nobody || st == 204 || st == 304)
		return 0;
	if (h->flags & HH_BAD) {
		http_untrack(slot, c, NET_HTTP_UT_BODY);
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
				      struct __sk_buff *skb, __u32 off0, __u64 ubuf, __u32 slot,
				      int paths)
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
			http_untrack(slot, c, NET_HTTP_UT_GAP);
			return;
		}
	}
	s->next = seq + len;
	if (s->state == HS_DONE)
		return;

	__u64 now = bpf_ktime_get_ns();

	for (int i = 0; i < (skb ? HTTP_STEPS : HTTP_STEPS_USER); i++) {
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
			http_untrack(slot, c, st == HS_HEAD ? NET_HTTP_UT_HEAD : NET_HTTP_UT_BODY);
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
		} else if (http_message(c, s, in, &h, skb, ubuf, off0 + pos, len - pos, now, slot,
					paths)) {
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
		http_untrack(slot, c, NET_HTTP_UT_BODY);
}

/* http_data() for user memory (syscalls source), global: the readv/writev loop calls it once per
 * buffer, and the verifier checks it once. seqlen: sequence number << 32 | length. */
__attribute__((noinline)) int http_data_user(struct http_conn *c, __u64 seqlen, __u32 in,
					     __u64 ubuf, __u32 slot)
{
	int paths = (slot_flags(slot) & SIDECAR_SLOT_NET_HTTP_PATHS) != 0;

	if (!c)
		return 0;
	if (in)
		http_data(c, 1, seqlen >> 32, (__u32)seqlen, NULL, 0, ubuf, slot, paths);
	else
		http_data(c, 0, seqlen >> 32, (__u32)seqlen, NULL, 0, ubuf, slot, paths);
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
static __always_inline void http_payload(__u32 slot, __u32 nr, __u32 fd, __u64 buf, long total,
					 int vec)
{
	int in = nr == NR_READ || nr == NR_RECVFROM || nr == NR_READV;
	struct sock *sk = tcp_sock_of_fd(fd);
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = total };
	void *conns = sidecar_slot_map(&net_http_conns, slot);

	if (!sk || !conns)
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
	struct http_conn *c = bpf_map_lookup_elem(conns, &key);

	if (!c) {
		if (!http_opens(NULL, (__u64)iov.iov_base, 0,
				iov.iov_len < total ? iov.iov_len : total))
			return;
		__u32 zero = 0;
		struct http_conn *init = bpf_map_lookup_elem(&net_http_conn_zero, &zero);

		if (!init)
			return;
		bpf_map_update_elem(conns, &key, init, BPF_NOEXIST);
		c = bpf_map_lookup_elem(conns, &key);
		if (!c) {
			bump(slot, NET_LOST_KEYS, 1);
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
			http_untrack(slot, c, NET_HTTP_UT_MIDSTREAM);
			return;
		}
		c->s[0].next = in ? seq : copied;
		c->s[1].next = in ? written : seq;
	}
	if (!vec) {
		http_data_user(c, (__u64)seq << 32 | (__u32)total, in, buf, slot);
		return;
	}
	for (int i = 0; i < HTTP_IOVS && total > 0; i++) {
		if (i && bpf_probe_read_user(&iov, sizeof(iov), (const void *)(buf + i * sizeof(iov))))
			return;
		__u32 l = iov.iov_len < total ? iov.iov_len : total;

		if (l)
			http_data_user(c, (__u64)seq << 32 | l, in, (__u64)iov.iov_base, slot);
		seq += l;
		total -= l;
	}
}

#define TCP_LISTEN 10

/* Payload of a TCP segment of the sockets of target `slot` (cgroup_skb: the packet from its IP
 * header; `off`: where the payload starts, found by pkt(); `flags`: the slot's options). */
static __always_inline void http_skb(struct __sk_buff *skb, int in, __u32 off, __u32 slot,
				     __u64 flags)
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
			bump(slot, NET_LOST_KEYS, 1);
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
			http_untrack(slot, c, NET_HTTP_UT_MIDSTREAM);
			return;
		}
		c->s[0].next = in ? seq : tp->rcv_nxt;
		c->s[1].next = in ? tp->snd_nxt : seq;
	}
	http_data(c, in, seq, len, skb, off, 0, slot, (flags & SIDECAR_SLOT_NET_HTTP_PATHS) != 0);
}

#endif /* NET_HTTP_PAIR_BPF_H */
