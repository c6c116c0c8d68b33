/* net family, PostgreSQL (frontend/backend protocol 3.0): queries paired with their results.
 * Included by net_proto.bpf.h only.
 *
 * Every message after the start-up one is a type byte and a length, so both streams are framed
 * exactly. The frontend's Query (simple protocol) and Execute (extended) messages are the
 * queries, Sync marks the end of an extended batch; the backend's CommandComplete, ErrorResponse,
 * EmptyQueryResponse and PortalSuspended answer them in order, ReadyForQuery ends the batch (an
 * Execute the server skipped after an error gets no answer and is dropped there). The kind comes
 * from the statement's text: the Query's, or the Parse message's of the statement the Execute's
 * portal was bound to (named statements are remembered per connection). A simple query with
 * several statements counts each: the first by its text, the others by their command tags (a
 * failed one, which has no tag, as `other`). COPY in both directions is framed like the rest
 * (CopyData messages) and counted at its CommandComplete. */
#ifndef NET_PG_BPF_H
#define NET_PG_BPF_H

#define PG_STARTUP 0 /* frontend: the next message has no type byte (start-up, SSL request) */
#define PG_SSLANS 1  /* backend: the next byte answers an SSL or GSSAPI encryption request */
#define PG_READY 2

#define PG_PROTO_3 196608
#define PG_SSL_REQUEST 80877103
#define PG_GSSENC_REQUEST 80877104

#define PQ_QUERY 1
#define PQ_EXEC 2
#define PQ_SYNC 3

static __always_inline __u32 be32(const __u8 *b)
{
	return (__u32)b[0] << 24 | (__u32)b[1] << 16 | (__u32)b[2] << 8 | b[3];
}

/* A start-up message (protocol 3.0) or an SSL/GSSAPI encryption request. */
static __always_inline int pg_opens(const __u8 *b, __u32 len)
{
	__u32 l = be32(b), code = be32(b + 4);

	if (code == PG_PROTO_3)
		return l >= 8 && l <= 10000;
	return l == 8 && (code == PG_SSL_REQUEST || code == PG_GSSENC_REQUEST);
}

/* FNV-1a of a NUL-terminated name in b (n valid bytes); *end: where its NUL is (n if none). */
static __always_inline __u32 pg_name_hash(const __u8 *b, __u32 from, __u32 n, __u32 *end)
{
	__u32 h = 2166136261u;

	*end = n;
	for (int i = 0; i < 64; i++) {
		__u32 j = from + i;

		if (j >= n || j >= 64)
			return h;
		if (!b[j]) {
			*end = j;
			return h;
		}
		h = (h ^ b[j]) * 16777619u;
	}
	return h;
}

/* Parse: remember the kind of the statement it names (the unnamed one included). */
__attribute__((noinline)) int pg_parse(struct __sk_buff *skb, struct proto_conn *c, __u32 boff,
				       __u32 bn)
{
	__u8 b[64] = {};
	__u32 n = bn < 64 ? bn : 64, end = 64;

	if (!skb || !c || !n || bpf_skb_load_bytes(skb, boff, b, HTTP_SIZE(n, 64)))
		return 0;
	__u32 h = pg_name_hash(b, 0, n, &end);
	__u8 kind = end + 1 < bn ? sql_kind(skb, boff + end + 1, bn - end - 1) : NET_KIND_OTHER;
	__u32 at = c->stmt_next & (PROTO_STMTS - 1);

	for (int i = 0; i < PROTO_STMTS; i++)
		if (c->stmt_id[i] == h) {
			at = i;
			break;
		}
	if (at == (c->stmt_next & (PROTO_STMTS - 1)))
		c->stmt_next++;
	c->stmt_id[at & (PROTO_STMTS - 1)] = h;
	c->stmt_kind[at & (PROTO_STMTS - 1)] = kind;
	return 0;
}

/* Bind: the portal runs the kind of the statement it names. */
__attribute__((noinline)) int pg_bind(struct __sk_buff *skb, struct proto_conn *c, __u32 boff,
				      __u32 bn)
{
	__u8 b[64] = {};
	__u32 n = bn < 64 ? bn : 64, portal_end = 64, end = 64;

	if (!skb || !c)
		return 0;
	c->portal_kind = NET_KIND_OTHER;
	if (!n || bpf_skb_load_bytes(skb, boff, b, HTTP_SIZE(n, 64)))
		return 0;
	pg_name_hash(b, 0, n, &portal_end);
	if (portal_end >= n)
		return 0;
	__u32 h = pg_name_hash(b, portal_end + 1, n, &end);

	if (end >= n)
		return 0;
	for (int i = 0; i < PROTO_STMTS; i++)
		if (c->stmt_id[i] == h) {
			c->portal_kind = c->stmt_kind[i];
			break;
		}
	return 0;
}

/* A frontend message of type t (its body at boff, bn bytes of it in this segment). */
__attribute__((noinline)) int pg_frontend(struct __sk_buff *skb, struct proto_conn *c, __u32 t,
					  __u64 boffbn, __u32 slot)
{
	__u32 boff = boffbn >> 32, bn = (__u32)boffbn;
	struct proto_req *q;

	if (!skb || !c)
		return 0;
	switch (t) {
	case 'Q':
		q = proto_push(c, slot, bpf_ktime_get_ns());
		if (q) {
			q->type = PQ_QUERY;
			q->kind = sql_kind(skb, boff, bn);
		}
		break;
	case 'P':
		pg_parse(skb, c, boff, bn);
		break;
	case 'B':
		pg_bind(skb, c, boff, bn);
		break;
	case 'E':
		q = proto_push(c, slot, bpf_ktime_get_ns());
		if (q) {
			q->type = PQ_EXEC;
			q->kind = c->portal_kind;
		}
		break;
	case 'S':
		q = proto_push(c, slot, 0);
		if (q)
			q->type = PQ_SYNC;
		break;
	}
	return 0;
}

/* The SQLSTATE class of an ErrorResponse (the `C` field's first two characters). */
static __always_inline void pg_sqlstate(struct __sk_buff *skb, __u32 boff, __u32 bn,
					struct proto_name *cls)
{
	__u8 b[64] = {};
	__u32 n = bn < 64 ? bn : 64;

	if (!n || bpf_skb_load_bytes(skb, boff, b, HTTP_SIZE(n, 64)))
		return;
	/* fields: a type byte, a NUL-terminated string; the type follows the previous NUL */
	for (int i = 0; i < 61; i++) {
		if (b[i] == 'C' && (i == 0 || !b[(i - 1) & 63])) {
			cls->b[0] = b[i + 1];
			cls->b[1] = b[i + 2];
			return;
		}
	}
}

/* A backend message of type t. */
__attribute__((noinline)) int pg_backend(struct __sk_buff *skb, struct proto_conn *c, __u32 t,
					 __u64 boffbn, __u32 slot)
{
	__u32 boff = boffbn >> 32, bn = (__u32)boffbn;

	if (!skb || !c)
		return 0;

	struct proto_req *q = proto_head(c);
	__u32 pd = NET_PROTO_POSTGRES | proto_dir(c) << 8;
	__u64 now = bpf_ktime_get_ns();
	struct proto_name cls = {};

	switch (t) {
	case 'C': /* CommandComplete */
	case 's': /* PortalSuspended: an Execute with a row limit, answered */
		if (!q || q->type == PQ_SYNC)
			return 0;
		if (q->type == PQ_EXEC) {
			proto_count(slot, pd | (__u32)q->kind << 24, 0, NULL, now - q->start);
			proto_pop(c);
			return 0;
		}
		/* a statement of a simple query; the next one starts now */
		__u32 kind = q->done && t == 'C' ? sql_kind(skb, boff, bn) : q->kind;

		proto_count(slot, pd | kind << 24, 0, NULL, now - q->start);
		q->done = 1;
		q->start = now;
		return 0;
	case 'E': /* ErrorResponse */
		pg_sqlstate(skb, boff, bn, &cls);
		proto_count(slot, pd | NET_PROTO_ERRORS << 16, 0, &cls, 0);
		if (!q || q->type == PQ_SYNC)
			return 0; /* not a query's: start-up, or a Parse or Bind that failed */
		proto_count(slot, pd | (__u32)(q->done ? NET_KIND_OTHER : q->kind) << 24, 0, NULL,
			    now - q->start);
		if (q->type == PQ_EXEC)
			proto_pop(c);
		else
			q->done = 1;
		return 0;
	case 'I': /* EmptyQueryResponse: no statement */
		if (q && q->type == PQ_EXEC)
			proto_pop(c);
		return 0;
	case 'Z': /* ReadyForQuery: the batch is over */
		for (int i = 0; i < PROTO_PIPELINE; i++) {
			q = proto_head(c);
			if (!q)
				return 0;
			proto_pop(c);
			if (q->type != PQ_EXEC)
				return 0;
		}
		return 0;
	/* CopyInResponse ('G') and CopyOutResponse ('H') need nothing: the data follows as
	 * CopyData messages, framed like every other, and the COPY's CommandComplete ends it. */
	case 'W': /* CopyBothResponse: streaming replication, not queries */
		proto_untrack(slot, c, NET_PROTO_UT_UNSUPPORTED);
		return 0;
	}
	return 0;
}

/* One message at `off` of the segment (`avail` bytes left): its header is read here, its body
 * skipped by the caller. Returns the bytes consumed (> 0), or -1: not followed any more. */
__attribute__((noinline)) int pg_step(struct __sk_buff *skb, struct proto_conn *c, __u64 offav,
				      __u32 inslot)
{
	__u32 off = offav >> 32, avail = (__u32)offav, in = inslot & 1, slot = inslot >> 8;
	struct proto_buf *pb = proto_scratch();
	int req;

	if (!skb || !c || !pb || !avail)
		return -1;

	struct proto_stream *s = proto_stream(c, in, &req);

	if (!req && c->phase == PG_SSLANS) {
		__u8 a = 0;

		if (bpf_skb_load_bytes(skb, off, &a, 1))
			return -1;
		if (a == 'N') { /* refused: the client goes on in plain text */
			c->phase = PG_STARTUP;
			return 1;
		}
		if (a == 'S')
			proto_count(slot,
				    NET_PROTO_POSTGRES | proto_dir(c) << 8 | NET_PROTO_TLS << 16, 0,
				    NULL, 0);
		c->off = 1; /* encrypted from here on (TLS, or GSSAPI for 'G') */
		return -1;
	}

	__u32 p = s->partlen & 15, n = proto_peek(skb, off, avail, s, pb);
	__u8 *b = pb->b;
	__u32 hl = req && c->phase != PG_READY ? 8 : 5;

	if (n < hl) {
		if (n == p + avail && proto_carry(s, pb, n))
			return avail;
		proto_untrack(slot, c, NET_PROTO_UT_HEAD);
		return -1;
	}
	s->partlen = 0;

	__u32 used = hl > p ? hl - p : 1;
	__u32 boff = off + used, bav = avail > used ? avail - used : 0;

	if (hl == 8) {
		__u32 l = be32(b), code = be32(b + 4);

		if (l == 8 && (code == PG_SSL_REQUEST || code == PG_GSSENC_REQUEST)) {
			c->phase = PG_SSLANS;
			return used;
		}
		if (code != PG_PROTO_3 || l < 8) {
			/* a cancel request, or not PostgreSQL 3.0 */
			proto_untrack(slot, c, NET_PROTO_UT_UNSUPPORTED);
			return -1;
		}
		c->phase = PG_READY;
		s->left = l - 8;
		return used;
	}

	__u32 t = b[0], l = be32(b + 1);

	if (l < 4) {
		proto_untrack(slot, c, NET_PROTO_UT_HEAD);
		return -1;
	}
	s->left = l - 4;

	__u32 bn = bav < l - 4 ? bav : l - 4;

	if (req)
		pg_frontend(skb, c, t, (__u64)boff << 32 | bn, slot);
	else
		pg_backend(skb, c, t, (__u64)boff << 32 | bn, slot);
	return used;
}

#endif /* NET_PG_BPF_H */
