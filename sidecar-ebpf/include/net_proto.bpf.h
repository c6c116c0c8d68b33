/* net family: Redis, PostgreSQL and MySQL requests recognised in the target's TCP segments, and
 * the choice of each connection's protocol (HTTP/1 included). Included by
 * sidecar-ebpf/bpf/net.bpf.c only, after net_http_pair.bpf.h: it uses that file's maps and
 * helpers. The parsers are net_redis.bpf.h, net_pg.bpf.h and net_mysql.bpf.h.
 *
 * A connection's protocol is decided once, from its first payload (either direction), by
 * content: a RESP array, a PostgreSQL startup or SSL request, a MySQL server greeting, an HTTP
 * request line. The decision is a 4-byte socket storage; a connection that is none of them costs
 * that one lookup per segment from then on and is never looked at again. A recognised one gets
 * its parser state (struct proto_conn) in a second socket storage, freed with the socket.
 *
 * Each protocol is framed exactly (lengths, RESP element counts), so the next message header is
 * always known; requests wait in a per-connection FIFO and are paired with answers in order
 * (pipelining). A header cut by the end of a segment is carried to the next one (up to 15
 * bytes). What cannot be followed stops the connection's tracking until it closes, counted by
 * reason: nothing is guessed. */
#ifndef NET_PROTO_BPF_H
#define NET_PROTO_BPF_H

#define PROTO_PIPELINE 32 /* requests waiting for their answers, per connection (power of 2) */
#define PROTO_STEPS 8192  /* messages (RESP lines) followed per segment (bpf_loop) */
#define PROTO_STMTS 16    /* prepared statements remembered per connection (power of 2) */

/* One direction of a connection. */
struct proto_stream {
	__u32 next;   /* sequence number of the next byte */
	__u32 left;   /* bytes of a body or bulk string still to skip */
	__u64 mstart; /* Redis: when the top-level message in progress began */
	__u32 need[8]; /* Redis: elements still due at each nesting depth */
	__u8 part[16]; /* the start of a header cut by the end of the last segment */
	__u8 partlen;
	__u8 depth;  /* Redis: nesting depth of the message in progress */
	__u8 top;    /* Redis: type byte of the top-level message in progress */
	__u8 skiplf; /* Redis: inside a simple line whose end is in a later segment */
	__u8 named;  /* Redis: the next bulk string is the command's name */
	__u8 pad[3];
	char name[NET_PROTO_NAME_LEN]; /* Redis: the command of the request in progress */
};

/* A request waiting for its answer. */
struct proto_req {
	__u64 start;
	__u8 kind; /* enum net_proto_kind */
	__u8 type; /* PostgreSQL: PQ_* */
	__u8 done; /* PostgreSQL: a statement of this simple query was answered already */
	__u8 pad[5];
	char name[NET_PROTO_NAME_LEN]; /* Redis: the command */
};

struct proto_conn {
	struct proto_stream s[2]; /* [0] received, [1] sent */
	__u8 proto;               /* enum net_proto */
	__u8 off;                 /* not followed any more */
	__u8 req_in;              /* requests are received: the target serves (direction 0) */
	__u8 head;                /* oldest waiting request in q */
	__u8 count;               /* requests waiting */
	__u8 phase;               /* PostgreSQL, MySQL: where the connection is in its start-up */
	__u8 portal_kind;         /* PostgreSQL: kind of the statement of the last Bind */
	__u8 stmt_next;           /* next entry of stmt_* to overwrite */
	__u8 await;               /* MySQL: the command whose answer comes next (MY_AWAIT_*) */
	__u8 await_kind;
	__u8 pad[6];
	__u64 await_start;
	__u32 stmt_id[PROTO_STMTS]; /* prepared statements: PostgreSQL name hash, MySQL id */
	__u8 stmt_kind[PROTO_STMTS];
	struct proto_req q[PROTO_PIPELINE];
};

/* The protocol of each connection of the targets, decided at its first payload. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
} net_proto_kind SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct proto_conn);
} net_proto_sk SEC(".maps");

/* Per slot, with any of --protocols redis,postgres,mysql. */
struct net_proto_counts_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1024);
	SIDECAR_INNER_KV(struct net_proto_key, __u64);
};
SIDECAR_SLOT_MAP(net_proto_counts, struct net_proto_counts_map);

struct net_proto_hists_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NET_PROTO_HISTS);
	SIDECAR_INNER_KV(__u32, struct syscall_stats);
};
SIDECAR_SLOT_MAP(net_proto_hists, struct net_proto_hists_map);

struct net_proto_counters_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NET_PROTO_COUNTERS);
	SIDECAR_INNER_KV(__u32, __u64);
};
SIDECAR_SLOT_MAP(net_proto_counters, struct net_proto_counters_map);

/* A message header assembled from the carried bytes and the segment's (see proto_peek). */
struct proto_buf {
	__u8 b[64];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct proto_buf);
} net_proto_scratch SEC(".maps");

struct proto_name {
	char b[NET_PROTO_NAME_LEN];
};

/* Count one request (what = NET_PROTO_REQUESTS, with its duration `ns`), error or TLS
 * connection. pdwk: proto | dir << 8 | what << 16 | kind << 24. Global: checked once. */
__attribute__((noinline)) int proto_count(__u32 slot, __u32 pdwk, __u32 code,
					  struct proto_name *name, __u64 ns)
{
	struct net_proto_key k = {
		.proto = pdwk & 0xff,
		.dir = (pdwk >> 8) & 1,
		.what = (pdwk >> 16) & 0xff,
		.kind = (pdwk >> 24) & (NET_PROTO_KINDS - 1),
		.code = code,
	};
	void *counts = sidecar_slot_map(&net_proto_counts, slot);

	if (!counts)
		return 0;
	if (name)
		__builtin_memcpy(k.name, name->b, NET_PROTO_NAME_LEN);
	hash_add(slot, counts, &k, 1);
	if (k.what != NET_PROTO_REQUESTS || k.proto < NET_PROTO_REDIS)
		return 0;

	__u32 h = ((k.proto - NET_PROTO_REDIS) * 2 + k.dir) * NET_PROTO_KINDS + k.kind;
	void *hists = sidecar_slot_map(&net_proto_hists, slot);
	struct syscall_stats *hs = hists ? bpf_map_lookup_elem(hists, &h) : NULL;

	if (hs) {
		hs->calls++;
		hs->time_ns += ns;
		hs->hist[sidecar_hist_bucket(ns)]++;
	}
	return 0;
}

/* Stop following the connection until it closes; counted once, by reason. Global: called from
 * many places, checked once. */
__attribute__((noinline)) int proto_untrack(__u32 slot, struct proto_conn *c, __u32 why)
{
	void *m = sidecar_slot_map(&net_proto_counters, slot);

	if (!c)
		return 0;
	__u32 idx = (c->proto - NET_PROTO_REDIS) * NET_PROTO_UT_REASONS + why;
	__u64 *n = m && idx < NET_PROTO_COUNTERS ? bpf_map_lookup_elem(m, &idx) : NULL;

	c->off = 1;
	if (n)
		*n += 1;
	return 0;
}

static __always_inline __u32 proto_dir(struct proto_conn *c)
{
	return c->req_in ? 0 : 1;
}

/* Queue a request; 0 when the FIFO is full (untracked). */
/* The stream of `c` a segment belongs to (received if `in`), and whether it carries requests. */
static __always_inline struct proto_stream *proto_stream(struct proto_conn *c, __u32 in, int *req)
{
	*req = in == c->req_in;
	return &c->s[in ? 0 : 1];
}

/* The per-CPU buffer a header is assembled in (proto_peek). */
static __always_inline struct proto_buf *proto_scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&net_proto_scratch, &zero);
}

static __always_inline struct proto_req *proto_push(struct proto_conn *c, __u32 slot, __u64 start)
{
	if (c->count >= PROTO_PIPELINE) {
		proto_untrack(slot, c, NET_PROTO_UT_PIPELINE);
		return NULL;
	}
	struct proto_req *q = &c->q[(c->head + c->count) & (PROTO_PIPELINE - 1)];

	q->start = start;
	q->kind = NET_KIND_OTHER;
	q->type = 0;
	q->done = 0;
	c->count++;
	return q;
}

/* The oldest waiting request, or NULL. */
static __always_inline struct proto_req *proto_head(struct proto_conn *c)
{
	return c->count ? &c->q[c->head & (PROTO_PIPELINE - 1)] : NULL;
}

static __always_inline void proto_pop(struct proto_conn *c)
{
	if (c->count) {
		c->head++;
		c->count--;
	}
}

/* The next bytes of stream `s` into b (a 64-byte scratch buffer): the carried start of a header,
 * then up to 32 bytes of the segment at `off` (`avail` bytes left). Returns how many are valid. */
static __always_inline __u32 proto_peek(struct __sk_buff *skb, __u32 off, __u32 avail,
					struct proto_stream *s, struct proto_buf *pb)
{
	__u8 *b = pb->b;
	__u32 p = s->partlen & 15;
	__u32 n = avail < 32 ? avail : 32;

	__builtin_memcpy(b, s->part, 16);
	if (!n || bpf_skb_load_bytes(skb, off, b + p, HTTP_SIZE(n, 32)))
		return p;
	return p + n;
}

/* The header in b (n valid bytes, the segment ended after them) is cut: keep it for the next
 * segment. 1: kept; 0: too long to keep (untracked). */
static __always_inline int proto_carry(struct proto_stream *s, struct proto_buf *pb, __u32 n)
{
	if (n >= 16)
		return 0;
	__builtin_memcpy(s->part, pb->b, 16);
	s->partlen = n;
	return 1;
}

static __always_inline __u8 upper(__u8 c)
{
	return c >= 'a' && c <= 'z' ? c - 0x20 : c;
}

/* The word w (n letters, upper case) at the start of b, case-insensitively. */
static __always_inline int word_is(const __u8 *b, const char *w, int n)
{
	for (int i = 0; i < n; i++)
		if (upper(b[i]) != w[i])
			return 0;
	/* the word ends there: not SELECTED, not BEGINNING */
	__u8 e = upper(b[n]);

	return !(e >= 'A' && e <= 'Z') && !(e >= '0' && e <= '9') && e != '_';
}

/* The kind of an SQL statement from its first word (up to 6 leading blanks or parentheses
 * skipped). */
__attribute__((noinline)) int sql_kind(struct __sk_buff *skb, __u32 off, __u32 avail)
{
	__u8 lead[8] = {}, b[16] = {};
	__u32 i = 0, n;

	if (!skb || !avail || bpf_skb_load_bytes(skb, off, lead, HTTP_SIZE(avail < 8 ? avail : 8, 8)))
		return NET_KIND_OTHER;
#pragma unroll
	for (int k = 0; k < 6; k++) {
		__u8 ch = lead[k];

		if (i != k || !(ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '('))
			break;
		i++;
	}
	if (i >= avail)
		return NET_KIND_OTHER;
	/* read again from the first letter: the stack buffer is only ever indexed by constants */
	n = avail - i < 16 ? avail - i : 16;
	if (bpf_skb_load_bytes(skb, off + i, b, HTTP_SIZE(n, 16)))
		return NET_KIND_OTHER;
	if (word_is(b, "SELECT", 6))
		return NET_KIND_SELECT;
	if (word_is(b, "INSERT", 6))
		return NET_KIND_INSERT;
	if (word_is(b, "UPDATE", 6))
		return NET_KIND_UPDATE;
	if (word_is(b, "DELETE", 6))
		return NET_KIND_DELETE;
	if (word_is(b, "BEGIN", 5) || word_is(b, "START", 5))
		return NET_KIND_BEGIN;
	if (word_is(b, "COMMIT", 6) || word_is(b, "END", 3))
		return NET_KIND_COMMIT;
	if (word_is(b, "ROLLBACK", 8) || word_is(b, "ABORT", 5))
		return NET_KIND_ROLLBACK;
	return NET_KIND_OTHER;
}

#include "net_redis.bpf.h"
#include "net_pg.bpf.h"
#include "net_mysql.bpf.h"

/* Which protocol a connection speaks, from its first payload (`len` bytes at `off`). */
static __always_inline __u32 proto_detect(struct __sk_buff *skb, __u32 off, __u32 len,
					  __u64 flags)
{
	__u8 b[16] = {};

	if (bpf_skb_load_bytes(skb, off, b, len < 16 ? (len < 8 ? 4 : 8) : 16) || len < 4)
		return NET_PROTO_NONE;
	if ((flags & SIDECAR_SLOT_NET_HTTP_PACKETS) && len >= 16 && b[0] >= 'A' && b[0] <= 'Z' &&
	    http_method((const char *)b) >= 0)
		return NET_PROTO_HTTP;
	if ((flags & SIDECAR_SLOT_NET_REDIS) && redis_opens(b))
		return NET_PROTO_REDIS;
	if ((flags & SIDECAR_SLOT_NET_POSTGRES) && len >= 8 && pg_opens(b, len))
		return NET_PROTO_POSTGRES;
	if ((flags & SIDECAR_SLOT_NET_MYSQL) && len >= 8 && mysql_opens(b, len))
		return NET_PROTO_MYSQL;
	return NET_PROTO_NONE;
}

/* One message of the connection's protocol. */
static __always_inline int proto_step(struct __sk_buff *skb, struct proto_conn *c, __u64 offav,
				      __u32 inslot)
{
	switch (c->proto) {
	case NET_PROTO_REDIS: {
		int r = redis_fast(skb, c, offav, inslot);

		return r ? r : redis_step(skb, c, offav, inslot);
	}
	case NET_PROTO_POSTGRES:
		return pg_step(skb, c, offav, inslot);
	default:
		return mysql_step(skb, c, offav, inslot);
	}
}

/* The per-segment loop's state (bpf_loop's context, on proto_data's stack). */
struct proto_loop {
	struct __sk_buff *skb;
	struct proto_conn *c;
	__u32 pos, len, off0, in, slot;
};

/* One step of the per-segment loop: skip what is left of a body, then one message. Run by
 * bpf_loop, so the verifier checks it once rather than once per iteration. 1: stop. */
static long proto_loop_step(__u64 i, struct proto_loop *x)
{
	struct proto_conn *c = x->c;
	__u32 pos = x->pos, len = x->len;

	if (!c || c->off)
		return 1;

	struct proto_stream *s = &c->s[x->in ? 0 : 1];

	if (s->left) {
		__u32 k = s->left < len - pos ? s->left : len - pos;

		pos += k;
		s->left -= k;
	}
	x->pos = pos;
	if (pos >= len)
		return 1;
	int r = proto_step(x->skb, c, (__u64)(x->off0 + pos) << 32 | (len - pos),
			   x->in | x->slot << 8);

	if (r <= 0 || c->off)
		return 1;
	x->pos = pos + r;
	return 0;
}

/* `len` payload bytes of stream `in` (received) or sent at `off0`, starting at sequence number
 * `seq`. Global: checked once. */
__attribute__((noinline)) int proto_data(struct __sk_buff *skb, struct proto_conn *c, __u32 in,
					 __u64 seqlen, __u32 off0slot)
{
	__u32 seq = seqlen >> 32, len = (__u32)seqlen;
	struct proto_loop x = {
		.skb = skb,
		.c = c,
		.len = len,
		.off0 = off0slot & 0xffff,
		.in = in,
		.slot = off0slot >> 16,
	};

	if (!skb || !c || c->off)
		return 0;

	struct proto_stream *s = &c->s[in ? 0 : 1];
	__s32 d = (__s32)(seq - s->next);

	if (d < 0) {
		/* a retransmission: skip what was seen */
		if ((__u32)-d >= len)
			return 0;
		x.pos = -d;
	} else if (d > 0) {
		/* bytes never seen: harmless inside a body, whose bytes are only skipped */
		if (!s->partlen && !s->skiplf && d <= s->left) {
			s->left -= d;
		} else {
			proto_untrack(x.slot, c, NET_PROTO_UT_GAP);
			return 0;
		}
	}
	s->next = seq + len;
	bpf_loop(PROTO_STEPS, proto_loop_step, &x, 0);
	if (c->off || x.pos >= len)
		return 0;
	/* the last step's message may leave a body that ends in this segment */
	if (s->left) {
		__u32 k = s->left < len - x.pos ? s->left : len - x.pos;

		x.pos += k;
		s->left -= k;
	}
	if (x.pos < len)
		proto_untrack(x.slot, c, NET_PROTO_UT_STEPS);
	return 0;
}

/* A new connection of protocol `kind` whose first payload is this segment's: its parser state,
 * unless it already carried data (then it is counted as midstream and never followed). */
static __always_inline void proto_open(struct __sk_buff *skb, struct bpf_sock *sk, __u32 kind,
				       int in, __u32 seq, __u32 slot)
{
	struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);
	struct proto_conn *c;

	if (!tp)
		return;
	c = bpf_sk_storage_get(&net_proto_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!c) {
		bump(slot, NET_LOST_KEYS, 1);
		return;
	}
	c->proto = kind;
	/* The first byte either way, as for HTTP (http_skb): nothing received before it, nothing
	 * sent (snd_una - bytes_acked is the first sequence number, give or take the SYN). */
	__u32 base = tp->snd_una - (__u32)tp->bytes_acked;
	int fresh = in ? tp->bytes_received == 0 && seq == tp->rcv_nxt &&
			     tp->snd_nxt == tp->snd_una && tp->snd_una - base <= 1
		       : tp->bytes_received == 0 && seq == tp->snd_nxt && seq - base <= 1;

	if (!fresh) {
		proto_untrack(slot, c, NET_PROTO_UT_MIDSTREAM);
		return;
	}
	c->s[0].next = in ? seq : tp->rcv_nxt;
	c->s[1].next = in ? tp->snd_nxt : seq;
	/* Redis and PostgreSQL clients speak first; a MySQL server does. */
	c->req_in = kind == NET_PROTO_MYSQL ? !in : in;
}

/* The TCP sequence number of the segment (cgroup_skb: the packet starts at its IP header).
 * 0: read. */
static __always_inline int skb_seq(struct __sk_buff *skb, __u32 *seq)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u8 vhl = 0;
	__be32 nseq = 0;
	__u32 l4;

	if (data + 1 <= end)
		vhl = *(__u8 *)data;
	else if (bpf_skb_load_bytes(skb, 0, &vhl, 1))
		return -1;
	l4 = (vhl >> 4) == 4 ? (vhl & 0xf) * 4 : 40;
	if (l4 < 64 && data + l4 + 8 <= end)
		__builtin_memcpy(&nseq, data + l4 + 4, 4);
	else if (bpf_skb_load_bytes(skb, l4 + 4, &nseq, 4))
		return -1;
	*seq = bpf_ntohl(nseq);
	return 0;
}

/* Payload of a TCP segment of target `slot` (cgroup_skb; `off`: where the payload starts). */
static __always_inline void proto_skb(struct __sk_buff *skb, int in, __u32 off, __u32 slot,
				      __u64 flags)
{
	struct bpf_sock *sk = skb->sk;

	if (!sk)
		return;
	sk = bpf_sk_fullsock(sk);
	if (!sk || sk->state == TCP_LISTEN)
		return;

	__u32 *kind = bpf_sk_storage_get(&net_proto_kind, sk, 0, 0);
	__u32 len = skb->len - off, seq;

	if (kind && *kind == NET_PROTO_NONE)
		return;
	if (kind && *kind == NET_PROTO_HTTP) {
		if (flags & SIDECAR_SLOT_NET_HTTP_PACKETS)
			http_skb(skb, in, off, slot, flags);
		return;
	}
	if (skb_seq(skb, &seq))
		return;
	if (!kind) {
		__u32 k = proto_detect(skb, off, len, flags);

		kind = bpf_sk_storage_get(&net_proto_kind, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!kind)
			return;
		*kind = k;
		if (k == NET_PROTO_NONE)
			return;
		if (k == NET_PROTO_HTTP) {
			http_skb(skb, in, off, slot, flags);
			return;
		}
		proto_open(skb, sk, k, in, seq, slot);
	}

	struct proto_conn *c = bpf_sk_storage_get(&net_proto_sk, sk, 0, 0);
	__u64 want = c && c->proto == NET_PROTO_REDIS	   ? SIDECAR_SLOT_NET_REDIS
		     : c && c->proto == NET_PROTO_POSTGRES ? SIDECAR_SLOT_NET_POSTGRES
							   : SIDECAR_SLOT_NET_MYSQL;

	if (!c || c->off || !(flags & want) || off > 0xffff)
		return;
	proto_data(skb, c, in, (__u64)seq << 32 | len, slot << 16 | off);
}

#endif /* NET_PROTO_BPF_H */
