/* net family, Redis (RESP2 and RESP3): commands paired with their replies. Included by
 * net_proto.bpf.h only.
 *
 * Both streams are framed element by element: aggregates (`*` arrays, `%` maps, `~` sets, `>`
 * pushes, `|` attributes) open a nesting level with their element count, bulk strings (`$`, `=`
 * verbatim, `!` blob errors) are skipped by length, and a top-level message ends when its last
 * element does. A request is an array of bulk strings whose first names the command (or an
 * inline command line); a reply is any top-level message other than a push or attributes. Each
 * reply answers the oldest waiting command: that is the pipelining rule of the protocol. */
#ifndef NET_REDIS_BPF_H
#define NET_REDIS_BPF_H

#define RESP_DEPTH 8 /* nesting levels followed */

/* "*<n>\r\n$": a RESP array of bulk strings, what every client sends first. */
static __always_inline int redis_opens(const __u8 *b)
{
	if (b[0] != '*' || b[1] < '1' || b[1] > '9')
		return 0;
	for (int i = 2; i < 6; i++) {
		if (b[i] == '\r')
			return b[i + 1] == '\n' && b[i + 2] == '$';
		if (b[i] < '0' || b[i] > '9')
			return 0;
	}
	return 0;
}

/* Where the first line feed at or after `off` is, within the segment's `avail` bytes, looked for
 * in up to 512 bytes: its index, -1 when the segment ends first, -2 when 512 bytes hold none. */
__attribute__((noinline)) int redis_find_lf(struct __sk_buff *skb, __u32 off, __u32 avail)
{
	if (!skb)
		return -2;
	for (int blk = 0; blk < 16; blk++) {
		__u64 w[4] = {};
		__u32 p = blk * 32, n;

		if (p >= avail)
			return -1;
		n = avail - p < 32 ? avail - p : 32;
		if (bpf_skb_load_bytes(skb, off + p, w, HTTP_SIZE(n, 32)))
			return -2;
		for (int k = 0; k < 4; k++) {
			__u64 v = w[k], x = v ^ 0x0a0a0a0a0a0a0a0aULL;

			if (!((x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL))
				continue;
			for (int j = 0; j < 8; j++)
				if (((v >> (8 * j)) & 0xff) == '\n') {
					__u32 q = p + k * 8 + j;

					return q < avail ? (int)q : -1;
				}
		}
	}
	return -2;
}

/* A top-level message of stream `s` ended: a request is queued; a reply is paired with the
 * oldest waiting command and counted. */
static __always_inline void redis_message(struct proto_conn *c, struct proto_stream *s, int req,
					  __u32 slot)
{
	if (req) {
		if (s->top != '*' && s->top != 'i') {
			proto_untrack(slot, c, NET_PROTO_UT_HEAD);
			return;
		}
		struct proto_req *q = proto_push(c, slot, s->mstart);

		if (q)
			__builtin_memcpy(q->name, s->name, NET_PROTO_NAME_LEN);
		return;
	}
	/* RESP3 pushes (pub/sub, tracking) answer no command; attributes precede a reply */
	if (s->top == '>' || s->top == '|')
		return;

	struct proto_req *q = proto_head(c);

	if (!q) {
		proto_untrack(slot, c, NET_PROTO_UT_PIPELINE);
		return;
	}
	__u32 dir = proto_dir(c);
	__u64 d = s->mstart > q->start ? s->mstart - q->start : 0;

	proto_count(slot, NET_PROTO_REDIS | dir << 8 | NET_PROTO_REQUESTS << 16, 0,
		    (struct proto_name *)q->name, d);
	if (s->top == '-' || s->top == '!')
		proto_count(slot, NET_PROTO_REDIS | dir << 8 | NET_PROTO_ERRORS << 16, 0,
			    (struct proto_name *)q->name, 0);
	proto_pop(c);
}

/* An element of stream `in` (received) or sent is complete: so may be its parents, and the
 * message. */
static __always_inline int redis_done(struct proto_conn *c, __u32 in, __u32 slot)
{
	if (!c)
		return 0;

	struct proto_stream *s = &c->s[in ? 0 : 1];
	int req = in == c->req_in;

	for (int k = 0; k <= RESP_DEPTH; k++) {
		if (!s->depth) {
			redis_message(c, s, req, slot);
			return 0;
		}
		__u32 d = (s->depth - 1) & (RESP_DEPTH - 1);

		if (s->need[d] > 1) {
			s->need[d]--;
			return 0;
		}
		s->need[d] = 0;
		s->depth--;
	}
	return 0;
}

/* A RESP line at the start of b (n valid bytes): where its line feed is, and its number. */
struct resp_line {
	__u64 v;
	__s32 e;    /* index of the line feed, -1: none in b */
	__u8 neg;   /* the number is negative (null bulk string or array) */
	__u8 valid; /* the number is digits followed by CR */
	__u8 pad[2];
};

__attribute__((noinline)) int resp_line(struct proto_buf *pb, __u32 n, struct resp_line *l)
{
	if (!pb || !l)
		return 0;
	l->e = -1;
	l->v = 0;
	l->neg = 0;
	l->valid = 0;
	/* the line feed: 8 bytes at a time, past the type byte */
	for (int k = 0; k < 6; k++) {
		__u64 v = 0, x;

		__builtin_memcpy(&v, &pb->b[k * 8], 8);
		x = v ^ 0x0a0a0a0a0a0a0a0aULL;
		if (!((x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL))
			continue;
		for (int j = 0; j < 8; j++) {
			__u32 i = k * 8 + j;

			if (i && i < n && ((v >> (8 * j)) & 0xff) == '\n') {
				l->e = i;
				break;
			}
		}
		if (l->e >= 0)
			break;
	}
	if (l->e < 2)
		return 0;

	__u32 e = l->e, digits = 0;

	for (__u32 i = 1; i < 24; i++) {
		if (i >= e - 1)
			break;
		__u8 ch = pb->b[i];

		if (i == 1 && ch == '-') {
			l->neg = 1;
			continue;
		}
		if (ch < '0' || ch > '9' || ++digits > 10)
			return 0;
		l->v = l->v * 10 + (ch - '0');
	}
	l->valid = digits && pb->b[(e - 1) & 63] == '\r';
	return 0;
}

/* The name of a command (`n` bytes at `off` of the segment, `avail` left) into dst (a map
 * value's NET_PROTO_NAME_LEN bytes), lower case as Redis reports it in INFO commandstats; cut at
 * NET_PROTO_NAME_LEN. A name cut by the segment's end stays empty: exported as `other`. */
static __always_inline void redis_name(struct __sk_buff *skb, __u32 off, __u32 avail, __u32 n,
				       char *dst)
{
	__u32 k = n < NET_PROTO_NAME_LEN ? n : NET_PROTO_NAME_LEN;

	if (k < 1 || k > NET_PROTO_NAME_LEN || avail < k || bpf_skb_load_bytes(skb, off, dst, k))
		return;
	for (int i = 0; i < NET_PROTO_NAME_LEN; i++) {
		__u8 ch = i < k ? dst[i] : 0;

		dst[i] = ch >= 'A' && ch <= 'Z' ? ch | 0x20 : ch;
	}
}

/* A whole RESP line of type t (its number v, negative if neg; `off`/`avail`: the segment from
 * the line's end on) applied to stream `in`: an element complete, a bulk string to skip (a
 * command's name read first), or an aggregate opened. tnv: t | neg << 8 | v << 16. 0, or -1:
 * untracked. Global: both line readers below call it, the verifier checks it once. */
__attribute__((noinline)) int redis_elem(struct __sk_buff *skb, struct proto_conn *c, __u64 offav,
					 __u32 inslot, __u64 tnv)
{
	__u32 off = offav >> 32, avail = (__u32)offav, in = inslot & 1, slot = inslot >> 8;
	__u8 t = tnv & 0xff, neg = (tnv >> 8) & 1, started = (tnv >> 9) & 1;
	__u64 v = tnv >> 16;

	int req;

	if (!skb || !c)
		return -1;

	struct proto_stream *s = proto_stream(c, in, &req);

	if (!s->depth && !started) {
		s->top = t;
		s->mstart = bpf_ktime_get_ns();
		s->named = 0;
		__builtin_memset(s->name, 0, NET_PROTO_NAME_LEN);
	}
	int want_name = s->named;

	s->named = 0;
	switch (t) {
	case '+':
	case '-':
	case ':':
	case '_':
	case '#':
	case ',':
	case '(':
		redis_done(c, in, slot);
		return 0;
	case '$':
	case '=':
	case '!':
		if (!neg) {
			if (want_name && req && s->depth == 1)
				redis_name(skb, off, avail, v, s->name);
			s->left = v + 2; /* the bytes and their CRLF */
		}
		redis_done(c, in, slot);
		return 0;
	case '*':
	case '~':
	case '>':
	case '%':
	case '|': {
		__u64 m = t == '%' || t == '|' ? 2 * v : v;

		if (neg || !m) {
			redis_done(c, in, slot);
			return 0;
		}
		if (s->depth >= RESP_DEPTH) {
			proto_untrack(slot, c, NET_PROTO_UT_UNSUPPORTED);
			return -1;
		}
		s->need[s->depth & (RESP_DEPTH - 1)] = m;
		s->depth++;
		s->named = s->depth == 1 && req && t == '*';
		return 0;
	}
	}
	proto_untrack(slot, c, NET_PROTO_UT_HEAD);
	return -1;
}

static __always_inline int resp_typed(__u8 t)
{
	return t == '+' || t == '-' || t == ':' || t == '_' || t == '#' || t == ',' || t == '(' ||
	       t == '$' || t == '=' || t == '!' || t == '*' || t == '~' || t == '>' || t == '%' ||
	       t == '|';
}

/* The common case, fast: a line of at most 8 bytes ("$16\r\n", "*3\r\n", "+OK\r\n") read with
 * one 8-byte load. Returns its length (0: not such a line, the general reader takes it), or -1.
 * Global: checked once. */
__attribute__((noinline)) int redis_line8(struct __sk_buff *skb, struct proto_conn *c, __u64 offav,
					  __u32 inslot)
{
	__u32 off = offav >> 32, avail = (__u32)offav;
	__u64 w = 0, v = 0;
	int e = -1, neg = 0, digits = 0, bad = 0;

	if (!skb || !c || avail < 8 || bpf_skb_load_bytes(skb, off, &w, 8))
		return 0;
	__u8 t = w & 0xff;

	if (!resp_typed(t))
		return 0;
#pragma unroll
	for (int j = 2; j < 8; j++)
		if (e < 0 && ((w >> (8 * j)) & 0xff) == '\n')
			e = j;
	if (e < 0 || ((w >> (8 * (e - 1))) & 0xff) != '\r')
		return 0;
#pragma unroll
	for (int j = 1; j < 6; j++) {
		__u8 ch = (w >> (8 * j)) & 0xff;

		if (j > e - 2)
			break;
		if (j == 1 && ch == '-')
			neg = 1;
		else if (ch >= '0' && ch <= '9')
			v = v * 10 + (ch - '0'), digits++;
		else
			bad = 1;
	}
	/* a number the type needs and does not have: the general reader says why */
	if ((bad || !digits) && !(t == '+' || t == '-' || t == '_' || t == '#' || t == ',' ||
				  t == '(' || t == ':'))
		return 0;
	__u32 end = e + 1;

	if (redis_elem(skb, c, (__u64)(off + end) << 32 | (avail - end), inslot,
		       t | (__u64)neg << 8 | v << 16) < 0)
		return -1;
	return end;
}

/* Lines of the common case and the bulk strings between them, up to 16 lines per call: bytes
 * consumed (0: none, the general reader goes on), or -1. Global, called before redis_step rather
 * than from it: the call chain stays within the 512 bytes of stack the verifier allows. */
__attribute__((noinline)) int redis_fast(struct __sk_buff *skb, struct proto_conn *c, __u64 offav,
					 __u32 inslot)
{
	__u32 off = offav >> 32, avail = (__u32)offav, in = inslot & 1, used = 0;

	if (!skb || !c || c->off)
		return -1;

	struct proto_stream *s = &c->s[in ? 0 : 1];

	if (s->skiplf || s->partlen)
		return 0;

	for (int k = 0; k < 16; k++) {
		if (s->left) {
			__u32 sk = s->left < avail - used ? s->left : avail - used;

			used += sk;
			s->left -= sk;
			if (s->left)
				return used;
		}
		if (used >= avail)
			break;
		int r = redis_line8(skb, c, (__u64)(off + used) << 32 | (avail - used), inslot);

		if (r < 0)
			return -1;
		if (r == 0)
			break;
		used += r;
	}
	return used;
}

/* One RESP line (and the skip of what it announces) at `off` of the segment, `avail` bytes left.
 * Returns the bytes consumed (> 0), or -1 when the connection is no longer followed. */
__attribute__((noinline)) int redis_step(struct __sk_buff *skb, struct proto_conn *c, __u64 offav,
					 __u32 inslot)
{
	__u32 off = offav >> 32, avail = (__u32)offav, in = inslot & 1, slot = inslot >> 8;
	int req;

	if (!skb || !c || !avail)
		return -1;

	struct proto_stream *s = proto_stream(c, in, &req);

	if (s->skiplf) {
		int i = redis_find_lf(skb, off, avail);

		if (i == -1)
			return avail; /* the line goes on in the next segment */
		if (i < 0) {
			proto_untrack(slot, c, NET_PROTO_UT_HEAD);
			return -1;
		}
		s->skiplf = 0;
		return i + 1;
	}
	struct proto_buf *pb = proto_scratch();

	if (!pb)
		return -1;

	__u32 p = s->partlen & 15, n = proto_peek(skb, off, avail, s, pb);
	__u8 t = pb->b[0];
	struct resp_line l = {};

	resp_line(pb, n, &l);
	/* Lines whose content does not matter: simple strings, errors, numbers, nulls, booleans. */
	int simple = t == '+' || t == '-' || t == ':' || t == '_' || t == '#' || t == ',' ||
		     t == '(';
	int inline_cmd = req && !s->depth && ((t >= 'A' && t <= 'Z') || (t >= 'a' && t <= 'z'));

	if (l.e < 0 || inline_cmd) {
		if (!s->depth) {
			s->top = inline_cmd ? 'i' : t;
			s->mstart = bpf_ktime_get_ns();
			s->named = 0;
			__builtin_memset(s->name, 0, NET_PROTO_NAME_LEN);
		}
	}
	if (l.e < 0) {
		if (simple && n > p) {
			/* the element is whole as far as counting goes; its line ends further on */
			s->partlen = 0;
			s->skiplf = 1;
			if (redis_elem(skb, c, 0, inslot, t | 1ULL << 9) < 0)
				return -1;
			return n - p;
		}
		if (n == p + avail && !inline_cmd && proto_carry(s, pb, n))
			return avail; /* cut by the segment's end: the next one completes it */
		proto_untrack(slot, c, NET_PROTO_UT_HEAD);
		return -1;
	}
	s->partlen = 0;
	__u32 e = l.e, used = e + 1 > p ? e + 1 - p : 1;

	if (inline_cmd) {
		/* "PING\r\n", "SET k v\r\n": the first word names the command */
		for (int i = 0; i < NET_PROTO_NAME_LEN; i++) {
			__u8 ch = pb->b[i];

			if (ch == ' ' || ch == '\r' || ch == '\n' || i >= e)
				break;
			s->name[i] = ch >= 'A' && ch <= 'Z' ? ch | 0x20 : ch;
		}
		/* complete as a simple element would be, the message's start kept */
		if (redis_elem(skb, c, 0, inslot, '+' | 1ULL << 9) < 0)
			return -1;
		return used;
	}
	if (!simple && !l.valid) {
		proto_untrack(slot, c, NET_PROTO_UT_HEAD);
		return -1;
	}
	if (redis_elem(skb, c, (__u64)(off + used) << 32 | (avail - used), inslot,
		       t | (__u64)l.neg << 8 | l.v << 16) < 0)
		return -1;
	return used;
}

#endif /* NET_REDIS_BPF_H */
