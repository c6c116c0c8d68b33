/* net family, HTTP/1.x part 1: connection state, the read/write payload source, and framing
 * (heads, header lines, chunk-size lines). Included by sidecar-ebpf/bpf/net.bpf.c only, in this
 * place: it uses that file's maps and helpers above it, and net_http_pair.bpf.h follows it. */
#ifndef NET_HTTP_BPF_H
#define NET_HTTP_BPF_H

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
#define HTTP_STEPS 16      /* heads, chunks and trailers followed per segment */
/* ... per read/write or SSL_read/SSL_write call: one call may carry a whole chunked answer (Node
 * writes a head and every chunk written in one tick with one SSL_write) */
#define HTTP_STEPS_USER 32
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
	__u8 tls;                /* read from SSL_read/SSL_write (net_tls.bpf.h): the `tls` label */
	__u8 pad[3];
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
 * when the socket closes (net_state). Per slot, only for slots with that source. LRU: a table
 * full of connections that never closed cannot stop new ones (an evicted connection is not
 * followed again: `midstream`); per-CPU LRU lists: no shared lock to take. 4096 x 552 bytes,
 * about the memory of the 16384-entry table of single pending requests it replaced. */
struct net_http_conns_map {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, 4096);
	SIDECAR_INNER_KV(__u64, struct http_conn);
};
SIDECAR_SLOT_MAP(net_http_conns, struct net_http_conns_map);

/* The same, for payloads read from TCP segments: kept on the socket itself, gone with it (a
 * socket belongs to one target: shared by all slots; what it counts goes to the slot found for
 * each segment). */
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

/* Per slot, with HTTP on and --http-paths off. */
struct net_http_requests_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1024);
	SIDECAR_INNER_KV(struct net_http_key, __u64);
};
SIDECAR_SLOT_MAP(net_http_requests, struct net_http_requests_map);

/* Request start to response start, by (tls * NET_HTTP_DIRS + dir) * NET_HTTP_METHODS + method
 * (tls: 0 plaintext, 1 inside TLS). */
struct net_http_hists_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * NET_HTTP_DIRS * NET_HTTP_METHODS);
	SIDECAR_INNER_KV(__u32, struct syscall_stats);
};
SIDECAR_SLOT_MAP(net_http_hists, struct net_http_hists_map);

/* --http-paths: requests and durations by (dir, method, status, path); replaces the two tables
 * above for the slots that ask. Full: the all-zero path collects the rest. */
struct net_http_paths_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NET_HTTP_PATHS_MAX);
	SIDECAR_INNER_KV(struct net_http_path_key, struct syscall_stats);
};
SIDECAR_SLOT_MAP(net_http_paths, struct net_http_paths_map);

/* Map values are too large for the stack: build new entries here. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct syscall_stats);
} net_http_zero SEC(".maps");

/* The socket closed (net_state): forget its syscall-fed parser state (slots with that source). */
static __always_inline void http_forget(__u32 slot, __u64 key)
{
	void *conns = sidecar_slot_map(&net_http_conns, slot);

	if (conns)
		bpf_map_delete_elem(conns, &key);
}

/* raw_tp args: ctx[0] = struct pt_regs *, ctx[1] = syscall number. Only the six calls that
 * carry payloads are remembered, for the slots that read HTTP from syscalls; every other syscall
 * leaves at the first comparison. */
SEC("raw_tp/sys_enter")
int net_sys_enter(unsigned long long *ctx)
{
	long nr = (long)ctx[1];

	if (nr != NR_READ && nr != NR_WRITE && nr != NR_SENDTO && nr != NR_RECVFROM &&
	    nr != NR_READV && nr != NR_WRITEV)
		return 0;

	int slot = sidecar_slot();

	if (slot < 0 || !(slot_flags(slot) & SIDECAR_SLOT_NET_HTTP_SYSCALLS))
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

#endif /* NET_HTTP_BPF_H */
