/* net family, MySQL and MariaDB (client/server protocol): commands paired with their answers.
 * Included by net_proto.bpf.h only.
 *
 * The server speaks first (its greeting), the client logs in, the server accepts (OK); then each
 * command is a packet with sequence number 0 and its answer starts with a packet numbered 1. The
 * protocol has no pipelining: a client sends its next command once it has read the whole answer,
 * so the first packet the server sends after a command is the start of that command's answer.
 * Its first byte says all that is counted: 0x00 OK, 0xFF ERR (with the error number), anything
 * else a result set. The rest of the answer (rows, column definitions) is not read. Client
 * packets are framed by their lengths. COM_QUERY and COM_STMT_EXECUTE are the queries; a
 * statement's kind comes from its COM_STMT_PREPARE text, remembered by statement id. */
#ifndef NET_MYSQL_BPF_H
#define NET_MYSQL_BPF_H

#define MY_GREETING 0 /* the server's greeting is due */
#define MY_LOGIN 1    /* greeted: the client's login is due */
#define MY_AUTH 2     /* logged in: the server's verdict, maybe after more exchanges */
#define MY_AUTH_Z 3   /* the same, with the compressed protocol asked for */
#define MY_COMMAND 4

#define MY_AWAIT_QUERY 1
#define MY_AWAIT_PREPARE 2
#define MY_AWAIT_OTHER 3

#define COM_QUIT 0x01
#define COM_QUERY 0x03
#define COM_STMT_PREPARE 0x16
#define COM_STMT_EXECUTE 0x17
#define COM_STMT_SEND_LONG_DATA 0x18
#define COM_STMT_CLOSE 0x19

#define CLIENT_COMPRESS 0x20
#define CLIENT_SSL 0x800

/* A server greeting: packet 0, protocol 10, a version string starting with a digit. */
static __always_inline int mysql_opens(const __u8 *b, __u32 len)
{
	__u32 l = b[0] | b[1] << 8 | b[2] << 16;

	return b[3] == 0 && b[4] == 10 && l >= 20 && l + 4 <= len && b[5] >= '0' && b[5] <= '9';
}

static __always_inline __u32 le32_at(struct __sk_buff *skb, __u32 off, __u32 avail)
{
	__u8 v[4] = {};

	if (avail < 4 || bpf_skb_load_bytes(skb, off, v, 4))
		return 0;
	return v[0] | v[1] << 8 | v[2] << 16 | (__u32)v[3] << 24;
}

/* A client packet in the command phase: sequence 0 starts a command. */
__attribute__((noinline)) int mysql_command(struct __sk_buff *skb, struct proto_conn *c, __u32 cmd,
					    __u64 boffbn)
{
	__u32 boff = boffbn >> 32, bn = (__u32)boffbn, id;

	if (!skb || !c)
		return 0;
	c->await = MY_AWAIT_OTHER;
	c->await_kind = NET_KIND_OTHER;
	c->await_start = bpf_ktime_get_ns();
	switch (cmd) {
	case COM_QUERY:
		c->await = MY_AWAIT_QUERY;
		c->await_kind = sql_kind(skb, boff, bn);
		break;
	case COM_STMT_PREPARE:
		c->await = MY_AWAIT_PREPARE;
		c->await_kind = sql_kind(skb, boff, bn);
		break;
	case COM_STMT_EXECUTE:
		c->await = MY_AWAIT_QUERY;
		id = le32_at(skb, boff, bn);
		for (int i = 0; i < PROTO_STMTS; i++)
			if (c->stmt_id[i] == id && id) {
				c->await_kind = c->stmt_kind[i];
				break;
			}
		break;
	case COM_QUIT:
	case COM_STMT_SEND_LONG_DATA:
	case COM_STMT_CLOSE:
		c->await = 0; /* no answer */
		break;
	}
	return 0;
}

/* The first packet of an answer: first byte `first`, the rest at boff. */
__attribute__((noinline)) int mysql_answer(struct __sk_buff *skb, struct proto_conn *c,
					   __u32 first, __u64 boffbn, __u32 slot)
{
	__u32 boff = boffbn >> 32, bn = (__u32)boffbn;

	if (!skb || !c)
		return 0;

	__u32 pd = NET_PROTO_MYSQL | proto_dir(c) << 8, aw = c->await, kind = c->await_kind;
	__u64 d = bpf_ktime_get_ns() - c->await_start;

	c->await = 0;
	if (first == 0xff) {
		__u32 code = le32_at(skb, boff, bn) & 0xffff;

		proto_count(slot, pd | NET_PROTO_ERRORS << 16, code, NULL, 0);
	}
	if (aw == MY_AWAIT_QUERY)
		proto_count(slot, pd | kind << 24, 0, NULL, d);
	if (aw == MY_AWAIT_PREPARE && first == 0x00) {
		__u32 at = c->stmt_next++ & (PROTO_STMTS - 1);

		c->stmt_id[at] = le32_at(skb, boff, bn);
		c->stmt_kind[at] = kind;
	}
	return 0;
}

/* One packet at `off` of the segment (`avail` bytes left). Returns the bytes consumed (> 0), or
 * -1: not followed any more. */
__attribute__((noinline)) int mysql_step(struct __sk_buff *skb, struct proto_conn *c, __u64 offav,
					 __u32 inslot)
{
	__u32 off = offav >> 32, avail = (__u32)offav, in = inslot & 1, slot = inslot >> 8;
	struct proto_buf *pb = proto_scratch();
	int req;

	if (!skb || !c || !pb || !avail)
		return -1;

	struct proto_stream *s = proto_stream(c, in, &req);

	/* the rest of an answer: not read */
	if (!req && c->phase == MY_COMMAND && !c->await && !s->partlen) {
		s->left = 0;
		return avail;
	}

	__u32 p = s->partlen & 15, n = proto_peek(skb, off, avail, s, pb);
	__u8 *b = pb->b;

	if (n < 5) {
		if (n == p + avail && proto_carry(s, pb, n))
			return avail;
		proto_untrack(slot, c, NET_PROTO_UT_HEAD);
		return -1;
	}
	s->partlen = 0;

	__u32 l = b[0] | b[1] << 8 | b[2] << 16, sq = b[3], first = b[4];

	if (!l || l == 0xffffff) {
		/* packets of 16 MiB and more are split in several: not followed */
		proto_untrack(slot, c, NET_PROTO_UT_UNSUPPORTED);
		return -1;
	}
	/* the header and the first byte are read; the caller skips the rest */
	__u32 used = 5 > p ? 5 - p : 1;
	__u32 boff = off + used, bav = avail > used ? avail - used : 0;
	__u32 bn = bav < l - 1 ? bav : l - 1;

	s->left = l - 1;
	if (req) {
		if (c->phase == MY_LOGIN && sq == 1) {
			__u32 caps = first;
			__u8 x[3] = {};

			if (bn >= 3 && !bpf_skb_load_bytes(skb, boff, x, 3))
				caps |= x[0] << 8 | x[1] << 16 | (__u32)x[2] << 24;
			if ((caps & CLIENT_SSL) && l == 32) {
				/* an SSL request: TLS from here on */
				proto_untrack(slot, c, NET_PROTO_UT_UNSUPPORTED);
				return -1;
			}
			c->phase = caps & CLIENT_COMPRESS ? MY_AUTH_Z : MY_AUTH;
		} else if (c->phase == MY_COMMAND && sq == 0) {
			mysql_command(skb, c, first, (__u64)boff << 32 | bn);
		}
		return used;
	}
	switch (c->phase) {
	case MY_GREETING:
		if (sq != 0 || first != 10) {
			proto_untrack(slot, c, NET_PROTO_UT_HEAD);
			return -1;
		}
		c->phase = MY_LOGIN;
		return used;
	case MY_AUTH:
	case MY_AUTH_Z:
		if (first == 0x00) {
			if (c->phase == MY_AUTH_Z) {
				proto_untrack(slot, c, NET_PROTO_UT_UNSUPPORTED);
				return -1;
			}
			c->phase = MY_COMMAND;
		} else if (first == 0xff) {
			/* login refused: counted, and the server closes the connection */
			c->await = 0;
			mysql_answer(skb, c, first, (__u64)boff << 32 | bn, slot);
			c->off = 1;
			return -1;
		}
		return used;
	case MY_COMMAND:
		if (sq != 1) {
			proto_untrack(slot, c, NET_PROTO_UT_PIPELINE);
			return -1;
		}
		mysql_answer(skb, c, first, (__u64)boff << 32 | bn, slot);
		s->left = 0;
		return avail; /* the rest of the answer is not read */
	}
	return used;
}

#endif /* NET_MYSQL_BPF_H */
