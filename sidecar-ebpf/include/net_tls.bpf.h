/* net family, HTTPS: HTTP/1.x inside TLS, read where the application hands plaintext to OpenSSL
 * and gets it back. Included by sidecar-ebpf/bpf/net.bpf.c only, right after
 * net_http_pair.bpf.h: it feeds that file's parser (http_data_user) with the plaintext of
 * SSL_read/SSL_write (and their _ex variants), per SSL * instead of per socket.
 *
 * Userspace attaches these programs per process of the target (perf_event_open with the
 * process's pid), so the kernel puts the breakpoints in the target's processes only: a
 * neighbour mapping the same libssl never traps. The slot is still checked (a shared kernel
 * side runs one program for every sidecar of the set, and a process may leave the target).
 *
 * Stream positions are the plaintext bytes this SSL * has moved each way, counted here from the
 * first call seen: TLS gives no sequence numbers, and nothing is lost between two calls of the
 * same connection. A connection is followed from a call whose plaintext starts with a request
 * line; one first seen in the middle of a message waits for a request line at the start of a
 * call (the first record after the sidecar attached, or the next request of a keep-alive
 * connection). */
#ifndef NET_TLS_BPF_H
#define NET_TLS_BPF_H

/* Userspace reads the stream positions of net_tls_conns' values to drop connections idle for
 * long (their process may have exited without SSL_free): sidecar_ebpf::net::TLS_CONN_*. */
_Static_assert(sizeof(struct http_conn) == 552, "sidecar_ebpf::net::TLS_CONN_SIZE");
_Static_assert(__builtin_offsetof(struct http_conn, s[0].next) == 8, "TLS_CONN_NEXT_IN");
_Static_assert(__builtin_offsetof(struct http_conn, s[1].next) == 24, "TLS_CONN_NEXT_OUT");

/* The SSL_* call in flight, per thread (task-local, as net_http_calls). */
struct tls_http_call {
	__u64 ssl;
	__u64 buf;
	__u64 out;     /* size_t * of the _ex variants */
	__u32 cookie1; /* attach cookie (TLS_READ|TLS_WRITE, TLS_EX) + 1; 0: none in flight */
	__u32 slot;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tls_http_call);
} net_tls_calls SEC(".maps");

/* Connections followed, by (SSL *, process); deleted at SSL_free, and by userspace when idle for
 * long (a process that exited never called SSL_free). Not preallocated (an LRU would be): a slot whose target speaks no TLS holds no
 * memory here. Full: the new connection is not followed (NET_LOST_KEYS). */
struct net_tls_conns_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NET_TLS_CONNS_MAX);
	SIDECAR_INNER_KV(struct net_tls_key, struct http_conn);
};
SIDECAR_SLOT_MAP(net_tls_conns, struct net_tls_conns_map);

/* SSL_read(ssl, buf, num) / SSL_write(ssl, buf, num) / SSL_read_ex(ssl, buf, num, *readbytes) /
 * SSL_write_ex(ssl, buf, num, *written); the attach cookie says which. */
SEC("uprobe")
int net_tls_enter(struct pt_regs *ctx)
{
	int slot = sidecar_slot();

	if (slot < 0 || !(slot_flags(slot) & SIDECAR_SLOT_NET_HTTPS))
		return 0;
	struct tls_http_call *c = bpf_task_storage_get(&net_tls_calls, bpf_get_current_task_btf(),
						       0, BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (!c)
		return 0;
	c->ssl = PT_REGS_PARM1(ctx);
	c->buf = PT_REGS_PARM2(ctx);
	c->out = PT_REGS_PARM4(ctx);
	c->cookie1 = (__u32)bpf_get_attach_cookie(ctx) + 1;
	c->slot = slot;
	return 0;
}

SEC("uretprobe")
int net_tls_exit(struct pt_regs *ctx)
{
	struct tls_http_call *t = bpf_task_storage_get(&net_tls_calls, bpf_get_current_task_btf(),
						       0, 0);

	if (!t || !t->cookie1)
		return 0;

	struct tls_http_call c = *t;
	__u32 cookie = c.cookie1 - 1;
	__u64 n = 0;

	t->cookie1 = 0;
	if (cookie & TLS_EX) {
		/* > 0 on success (1 for the _ex calls; OpenSSL's internal read/write, which usdt::per_process
		 * may hook instead, returns 1 too), the length through the pointer */
		if ((int)PT_REGS_RC(ctx) <= 0 || bpf_probe_read_user(&n, sizeof(n), (void *)c.out))
			return 0;
	} else {
		int rc = (int)PT_REGS_RC(ctx);

		if (rc <= 0)
			return 0;
		n = rc;
	}
	/* A TLS record holds 16 KiB; the _ex calls take a size_t: keep to what 32 bits count. */
	if (!n || n > (1U << 30))
		return 0;
	/* The governor may have turned HTTP off since the call began. */
	if (!(slot_flags(c.slot) & SIDECAR_SLOT_NET_HTTPS))
		return 0;
	void *conns = sidecar_slot_map(&net_tls_conns, c.slot);

	if (!conns)
		return 0;

	struct net_tls_key k = { .ssl = c.ssl, .tgid = bpf_get_current_pid_tgid() >> 32 };
	int in = (cookie & 1) == TLS_READ;
	struct http_conn *hc = bpf_map_lookup_elem(conns, &k);

	if (!hc) {
		__u32 zero = 0;
		struct http_conn *init;

		if (!http_opens(NULL, c.buf, 0, (__u32)n))
			return 0;
		init = bpf_map_lookup_elem(&net_http_conn_zero, &zero);
		if (!init)
			return 0;
		bpf_map_update_elem(conns, &k, init, BPF_NOEXIST);
		hc = bpf_map_lookup_elem(conns, &k);
		if (!hc) {
			bump(c.slot, NET_LOST_KEYS, 1);
			return 0;
		}
		hc->tls = 1;
	}
	__u32 seq = in ? hc->s[0].next : hc->s[1].next;

	http_data_user(hc, (__u64)seq << 32 | (__u32)n, in, c.buf, c.slot);
	return 0;
}

/* SSL_free(ssl): the connection is gone; its address may be another connection's next. Not
 * gated on the flag: what was followed is forgotten even while HTTP is off. */
SEC("uprobe")
int net_tls_free(struct pt_regs *ctx)
{
	int slot = sidecar_slot();
	void *conns = slot >= 0 ? sidecar_slot_map(&net_tls_conns, slot) : NULL;

	if (!conns)
		return 0;

	struct net_tls_key k = { .ssl = PT_REGS_PARM1(ctx),
				 .tgid = bpf_get_current_pid_tgid() >> 32 };

	bpf_map_delete_elem(conns, &k);
	return 0;
}

#endif /* NET_TLS_BPF_H */
