// SPDX-License-Identifier: GPL-2.0
/* Security family: an event stream of what a security team cares about, through a ring buffer.
 * Hooks: the tracepoints of the few watched syscalls (raw_tp sys_enter without tracefs, or the
 * syscalls family's tail call), sched_process_exec, inet_sock_set_state (new listening ports),
 * signal_generate (SIGSYS from a seccomp filter).
 * Counts per kind (emitted and lost) stay in the kernel; only events cross to userspace.
 *
 * Every program finds the slot (target) of the task first: the ring buffer, the counts, the
 * sensitive prefixes, the peers and ports seen and the TLS byte counts are the slot's own inner
 * maps (SIDECAR_SLOT_MAP), so a sidecar reads only its own target's events. */
#include "sidecar.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define TCP_LISTEN 10
#define O_ACCMODE 3
#define O_CREAT 0100
#define O_TRUNC 01000

struct security_events_map {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	/* ~1k events: 0.2 s of a 5k/s stream while the reader waits for a CPU on a busy host
	 * (per slot: every sidecar on a set has one). */
	__uint(max_entries, 512 * 1024);
};
SIDECAR_SLOT_MAP(security_events, struct security_events_map);

/* [kind] = emitted, [SEC_KINDS + kind] = lost */
struct security_counts_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * SEC_KINDS);
	SIDECAR_INNER_KV(__u32, __u64);
};
SIDECAR_SLOT_MAP(security_counts, struct security_counts_map);

/* Sensitive path prefixes, written by userspace (--sensitive-path). */
struct sensitive_prefixes_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SEC_PREFIXES);
	SIDECAR_INNER_KV(__u32, struct sec_prefix);
};
SIDECAR_SLOT_MAP(sensitive_prefixes, struct sensitive_prefixes_map);

/* The slot's settings (struct security_config), written by userspace at load. */
struct security_config_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	SIDECAR_INNER_KV(__u32, struct security_config);
};
SIDECAR_SLOT_MAP(security_config, struct security_config_map);

struct peer_key {
	__u8 addr[16];
	__u16 port;
	__u16 family;
};

/* Peers and listening ports already reported to the slot: "new" means not in here. Bounded
 * (LRU, always preallocated: ~96 bytes an entry, per slot, so sized for one target: 1024 peers
 * is 96 KiB, 256 ports 24 KiB; a peer evicted by 1024 newer ones is reported new again). */
struct seen_peers_map {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	SIDECAR_INNER_KV(struct peer_key, __u8);
};
SIDECAR_SLOT_MAP(seen_peers, struct seen_peers_map);

struct seen_ports_map {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 256);
	SIDECAR_INNER_KV(__u16, __u8);
};
SIDECAR_SLOT_MAP(seen_ports, struct seen_ports_map);

/* Calls a seccomp filter killed, by syscall slot (SECCOMP_RET_KILL_*: the task is dead). */
struct seccomp_kills_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SIDECAR_SYSCALL_SLOTS);
	SIDECAR_INNER_KV(__u32, __u64);
};
SIDECAR_SLOT_MAP(seccomp_kills, struct seccomp_kills_map);

/* Scratch for reading a path before deciding to emit (too big for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, char[SEC_PATH_LEN]);
} path_scratch SEC(".maps");

static __always_inline void count(__u32 slot, __u32 idx)
{
	void *m = sidecar_slot_map(&security_counts, slot);
	__u64 *c = m ? bpf_map_lookup_elem(m, &idx) : NULL;

	if (c)
		*c += 1;
}

/* The slot's settings, NULL when the slot has no security family (another sidecar's target). */
static __always_inline struct security_config *sec_config(__u32 slot)
{
	void *m = sidecar_slot_map(&security_config, slot);
	__u32 zero = 0;

	return m ? bpf_map_lookup_elem(m, &zero) : NULL;
}

/* An event for the slot's ring buffer (NULL: the slot has none, or it is full: counted lost). */
static __always_inline struct security_event *reserve(__u32 slot, __u32 kind)
{
	void *rb = sidecar_slot_map(&security_events, slot);
	struct security_event *e;

	if (!rb)
		return NULL;
	e = bpf_ringbuf_reserve(rb, sizeof(*e), 0);
	if (!e) {
		count(slot, SEC_KINDS + kind);
		return NULL;
	}
	count(slot, kind);

	struct task_struct *task = bpf_get_current_task_btf();
	struct pid *tp = task->group_leader->thread_pid;
	unsigned int level = tp->level;
	struct upid up = {};

	bpf_probe_read_kernel(&up, sizeof(up), &tp->numbers[level & 7]);
	e->ts_ns = bpf_ktime_get_ns();
	e->kind = kind;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->ns_pid = up.nr;
	e->ppid = task->real_parent->tgid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->nr = 0;
	e->args[0] = e->args[1] = e->args[2] = e->args[3] = 0;
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	e->port = 0;
	e->family = 0;
	e->argv_len = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_probe_read_kernel_str(e->pcomm, sizeof(e->pcomm), task->real_parent->comm);
	e->path[0] = 0;
	e->argv[0] = 0;
	return e;
}

/* Wake the reader only once a batch has piled up; it also polls every 100 ms. A wakeup per event
 * cost the exec storm a context switch per exec (reader thread scheduled for one event). */
#define WAKEUP_BYTES (64 * 1024)

static __always_inline void submit(__u32 slot, struct security_event *e)
{
	void *rb = sidecar_slot_map(&security_events, slot);
	__u64 flags = rb && bpf_ringbuf_query(rb, BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES
			      ? BPF_RB_FORCE_WAKEUP
			      : BPF_RB_NO_WAKEUP;

	bpf_ringbuf_submit(e, flags);
}

static __always_inline int is_shell(const char *c)
{
	/* sh, ash, dash, bash, zsh */
	if (c[0] == 's' && c[1] == 'h' && c[2] == 0)
		return 1;
	if (c[0] == 'a' && c[1] == 's' && c[2] == 'h' && c[3] == 0)
		return 1;
	if (c[0] == 'z' && c[1] == 's' && c[2] == 'h' && c[3] == 0)
		return 1;
	if ((c[0] == 'd' || c[0] == 'b') && c[1] == 'a' && c[2] == 's' && c[3] == 'h' && c[4] == 0)
		return 1;
	return 0;
}

/* raw_tp args: ctx[0] = task, ctx[1] = old pid, ctx[2] = struct linux_binprm * */
SEC("raw_tp/sched_process_exec")
int security_exec(unsigned long long *ctx)
{
	int slot = sidecar_slot();

	if (slot < 0)
		return 0;

	struct linux_binprm *bprm = (struct linux_binprm *)ctx[2];
	struct security_event *e = reserve(slot, SEC_EXEC);

	if (!e)
		return 0;
	bpf_probe_read_kernel_str(e->path, sizeof(e->path), BPF_CORE_READ(bprm, filename));

	struct task_struct *task = bpf_get_current_task_btf();
	unsigned long start = task->mm->arg_start, end = task->mm->arg_end;
	__u32 len = end > start ? end - start : 0;

	if (len > SEC_ARGV_LEN)
		len = SEC_ARGV_LEN;
	if (len && !bpf_probe_read_user(e->argv, len & (SEC_ARGV_LEN - 1) ?: SEC_ARGV_LEN, (void *)start))
		e->argv_len = len;

	int shell = is_shell(e->comm) && !is_shell(e->pcomm);

	submit(slot, e);

	if (shell) {
		e = reserve(slot, SEC_SHELL);
		if (!e)
			return 0;
		bpf_probe_read_kernel_str(e->path, sizeof(e->path), BPF_CORE_READ(bprm, filename));
		submit(slot, e);
	}
	return 0;
}

static __always_inline int prefix_match(__u32 slot, const char *path)
{
	void *prefixes = sidecar_slot_map(&sensitive_prefixes, slot);

	if (!prefixes)
		return 0;
	for (__u32 i = 0; i < SEC_PREFIXES; i++) {
		__u32 k = i;
		struct sec_prefix *p = bpf_map_lookup_elem(prefixes, &k);

		if (!p || !p->len)
			return 0;
		int ok = 1;

		for (__u32 j = 0; j < SEC_PREFIX_LEN; j++) {
			if (j >= p->len)
				break;
			if (path[j] != p->bytes[j]) {
				ok = 0;
				break;
			}
		}
		if (ok)
			return 1;
	}
	return 0;
}

static __always_inline void syscall_event(__u32 slot, __u32 kind, __u64 nr, struct pt_regs *regs)
{
	struct security_event *e = reserve(slot, kind);

	if (!e)
		return;
	e->nr = nr;
	e->args[0] = BPF_CORE_READ(regs, di);
	e->args[1] = BPF_CORE_READ(regs, si);
	e->args[2] = BPF_CORE_READ(regs, dx);
	e->args[3] = BPF_CORE_READ(regs, r10);
	/* mount(src, target, ...): the target is what matters */
	if (nr == 165)
		bpf_probe_read_user_str(e->path, sizeof(e->path), (void *)e->args[1]);
	else if (nr == 166)
		bpf_probe_read_user_str(e->path, sizeof(e->path), (void *)e->args[0]);
	submit(slot, e);
}

static __always_inline void open_event(__u32 slot, __u64 nr, struct pt_regs *regs)
{
	/* open(path, flags) or openat(dfd, path, flags) / openat2(dfd, path, how) */
	const char *upath = (const char *)(nr == 2 ? BPF_CORE_READ(regs, di) : BPF_CORE_READ(regs, si));
	__u64 flags;

	if (nr == 2) {
		flags = BPF_CORE_READ(regs, si);
	} else if (nr == 257) {
		flags = BPF_CORE_READ(regs, dx);
	} else {
		struct open_how how = {};

		bpf_probe_read_user(&how, sizeof(how), (void *)BPF_CORE_READ(regs, dx));
		flags = how.flags;
	}
	if ((flags & O_ACCMODE) == 0 && !(flags & (O_CREAT | O_TRUNC)))
		return; /* read-only */

	__u32 zero = 0;
	char *path = bpf_map_lookup_elem(&path_scratch, &zero);

	if (!path || bpf_probe_read_user_str(path, SEC_PATH_LEN, upath) <= 0)
		return;
	if (!prefix_match(slot, path))
		return;

	struct security_event *e = reserve(slot, SEC_SENSITIVE_OPEN);

	if (!e)
		return;
	e->nr = nr;
	e->args[0] = flags;
	__builtin_memcpy(e->path, path, SEC_PATH_LEN);
	submit(slot, e);
}

static __always_inline void connect_event(__u32 slot, struct pt_regs *regs)
{
	void *seen = sidecar_slot_map(&seen_peers, slot);
	struct peer_key k = {};
	void *uaddr = (void *)BPF_CORE_READ(regs, si);
	/* One read of the largest address this cares about; a short IPv4 address at the very end of
	 * a mapping makes it fail, then the IPv4 size is read instead. */
	union {
		__u16 family;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} sa = {};

	if (!seen)
		return;
	if (bpf_probe_read_user(&sa, sizeof(sa.in6), uaddr) &&
	    bpf_probe_read_user(&sa, sizeof(sa.in), uaddr))
		return;
	if (sa.family == AF_INET) {
		__builtin_memcpy(k.addr, &sa.in.sin_addr, 4);
		k.port = bpf_ntohs(sa.in.sin_port);
	} else if (sa.family == AF_INET6) {
		__builtin_memcpy(k.addr, &sa.in6.sin6_addr, 16);
		k.port = bpf_ntohs(sa.in6.sin6_port);
	} else {
		return;
	}
	k.family = sa.family;
	/* Look before inserting: an LRU insert takes a free node (and may evict) even when the key
	 * is there, and almost every connect goes to a peer seen before. */
	if (bpf_map_lookup_elem(seen, &k))
		return;

	__u8 one = 1;

	if (bpf_map_update_elem(seen, &k, &one, BPF_NOEXIST))
		return; /* another CPU inserted it first */

	struct security_event *e = reserve(slot, SEC_CONNECT_NEW_PEER);

	if (!e)
		return;
	e->nr = 42;
	__builtin_memcpy(e->addr, k.addr, 16);
	e->port = k.port;
	e->family = sa.family;
	submit(slot, e);
}

/* Which event a syscall number stands for, or 0: nearly every syscall of the host leaves here
 * when the raw tracepoint is the hook. */
static __always_inline __u32 watched_kind(__u64 nr)
{
	switch (nr) {
	case 105: case 106: case 113: case 114: case 117: case 119: case 126:
		return SEC_PRIVILEGE;      /* setuid setgid setreuid setregid setresuid setresgid capset */
	case 101:
		return SEC_PTRACE;
	case 165: case 166: case 272: case 308:
		return SEC_NAMESPACE;      /* mount umount2 unshare setns */
	case 175: case 313:
		return SEC_MODULE;         /* init_module finit_module */
	case 321:
		return SEC_BPF;
	case 2: case 257: case 437:
		return SEC_SENSITIVE_OPEN; /* open openat openat2 */
	case 42:
		return SEC_CONNECT_NEW_PEER;
	default:
		return 0;
	}
}

static __always_inline void on_syscall(__u32 slot, __u32 kind, __u64 nr, struct pt_regs *regs)
{
	if (kind == SEC_SENSITIVE_OPEN)
		open_event(slot, nr, regs);
	else if (kind == SEC_CONNECT_NEW_PEER)
		connect_event(slot, regs);
	else
		syscall_event(slot, kind, nr, regs);
}

/* The slot of the current task when `hook` is the program that reports its syscalls, else -1:
 * on a shared kernel side several of the entry programs below may be attached at once, each
 * for the slots that chose it (security_config.syscall_hook). */
static __always_inline int hook_slot(__u32 hook)
{
	int slot = sidecar_slot();
	struct security_config *c;

	if (slot < 0)
		return -1;
	c = sec_config(slot);
	return c && c->syscall_hook == hook ? slot : -1;
}

/* Default hook: attached to the tracepoints of the watched syscalls only (userspace lists them),
 * so the host's other syscalls run no program at all. The arguments come from the saved user
 * registers, not the record: one program serves syscalls of 1 to 5 arguments, and the kernel
 * refuses to attach a program that reads past the shortest record. */
SEC("tracepoint/syscalls/sys_enter_openat")
int security_syscall(struct sidecar_sys_enter *ctx)
{
	__u64 nr = (__u64)ctx->nr;
	__u32 kind = watched_kind(nr);
	int slot;

	if (!kind)
		return 0;
	slot = hook_slot(SEC_HOOK_TRACEPOINTS);
	if (slot < 0)
		return 0;
	on_syscall(slot, kind, nr, (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf()));
	return 0;
}

/* raw_tp args: ctx[0] = struct pt_regs *, ctx[1] = number. */
static __always_inline int raw_sys_enter(unsigned long long *ctx, __u32 hook)
{
	__u64 nr = ctx[1];
	__u32 kind = watched_kind(nr);
	int slot;

	if (!kind)
		return 0;
	slot = hook_slot(hook);
	if (slot < 0)
		return 0;
	on_syscall(slot, kind, nr, (struct pt_regs *)ctx[0]);
	return 0;
}

/* The handler the syscalls family's sys_enter tail-calls (see sidecar/src/probes/dispatch.rs):
 * it runs for the targets' syscalls only. */
SEC("raw_tp/sys_enter")
int security_sys_enter(unsigned long long *ctx)
{
	return raw_sys_enter(ctx, SEC_HOOK_DISPATCH);
}

/* Fallback when tracefs is out of reach (no mount, no CAP_SYS_ADMIN to mount one) and there is no
 * jump slot: the raw tracepoint sees every syscall of the host. */
SEC("raw_tp/sys_enter")
int security_sys_enter_raw(unsigned long long *ctx)
{
	return raw_sys_enter(ctx, SEC_HOOK_RAW);
}

/* raw_tp args: ctx[0] = const struct sock *, ctx[1] = oldstate, ctx[2] = newstate */
SEC("raw_tp/inet_sock_set_state")
int security_listen(unsigned long long *ctx)
{
	if ((int)ctx[2] != TCP_LISTEN)
		return 0;

	/* The task calling listen(): process context. */
	int slot = sidecar_slot();
	void *seen = slot >= 0 ? sidecar_slot_map(&seen_ports, slot) : NULL;

	if (!seen)
		return 0;

	struct sock *sk = (struct sock *)ctx[0];
	__u16 port = BPF_CORE_READ(sk, __sk_common.skc_num);
	__u8 one = 1;

	if (bpf_map_lookup_elem(seen, &port) || bpf_map_update_elem(seen, &port, &one, BPF_NOEXIST))
		return 0;

	struct security_event *e = reserve(slot, SEC_LISTEN_NEW_PORT);

	if (!e)
		return 0;
	e->port = port;
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	submit(slot, e);
	return 0;
}

/* ---- Opt-in sensitive probes: uprobes attached by userspace only with their flags. ----
 * A uprobe is on a file, for every process that maps it: on a shared kernel side it fires for
 * every slot whose processes map that file, so each program checks that the slot asked for it
 * (SIDECAR_SLOT_BASH_READLINE, SIDECAR_SLOT_TLS_PLAINTEXT). */

/* The slot of the current task when it asked for `flag`, else -1. */
static __always_inline int opted_slot(__u64 flag)
{
	int slot = sidecar_slot();

	return slot >= 0 && sidecar_slot_wants(slot, flag) ? slot : -1;
}

/* readline's return: the line bash just read (NULL at end of input). */
SEC("uretprobe")
int security_readline(struct pt_regs *ctx)
{
	int slot = opted_slot(SIDECAR_SLOT_BASH_READLINE);

	if (slot < 0)
		return 0;

	const char *line = (const char *)PT_REGS_RC(ctx);

	if (!line)
		return 0;

	struct security_event *e = reserve(slot, SEC_BASH_READLINE);

	if (!e)
		return 0;

	long n = bpf_probe_read_user_str(e->argv, sizeof(e->argv), line);
	char more = 0;

	e->argv_len = n > 0 ? n - 1 : 0;
	/* A full buffer is only a truncation when the line goes on past it. */
	if (n == sizeof(e->argv))
		bpf_probe_read_user(&more, 1, line + sizeof(e->argv) - 1);
	e->args[0] = more != 0;
	submit(slot, e);
	return 0;
}

/* Per slot, only for slots with --tls-plaintext. */
struct tls_bytes_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TLS_KEYS_MAX);
	SIDECAR_INNER_KV(struct tls_bytes_key, __u64);
};
SIDECAR_SLOT_MAP(tls_bytes, struct tls_bytes_map);

/* [dir]: bytes of (direction, comm) pairs that did not fit tls_bytes. */
struct tls_other_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	SIDECAR_INNER_KV(__u32, __u64);
};
SIDECAR_SLOT_MAP(tls_other, struct tls_other_map);

/* Arguments saved at SSL_* entry for the return probe, per thread (a thread is in one target:
 * shared; the return probe finds the slot again). */
struct tls_call {
	__u64 buf;
	__u64 out; /* size_t * of the _ex variants */
	__u64 cookie;
};

/* LRU: a thread that dies inside SSL_read must not hold its entry forever. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct tls_call);
} tls_calls SEC(".maps");

/* SSL_read(ssl, buf, num) / SSL_write(ssl, buf, num) / SSL_read_ex(ssl, buf, num, *readbytes) /
 * SSL_write_ex(ssl, buf, num, *written); the cookie says which (TLS_READ|TLS_WRITE, TLS_EX). */
SEC("uprobe")
int security_ssl_enter(struct pt_regs *ctx)
{
	if (opted_slot(SIDECAR_SLOT_TLS_PLAINTEXT) < 0)
		return 0;

	__u64 id = bpf_get_current_pid_tgid();
	struct tls_call c = {
		.buf = PT_REGS_PARM2(ctx),
		.out = PT_REGS_PARM4(ctx),
		.cookie = bpf_get_attach_cookie(ctx),
	};

	bpf_map_update_elem(&tls_calls, &id, &c, BPF_ANY);
	return 0;
}

static __always_inline void tls_add(__u32 slot, __u32 dir, __u64 n)
{
	void *bytes = sidecar_slot_map(&tls_bytes, slot);
	void *other = sidecar_slot_map(&tls_other, slot);
	struct tls_bytes_key k = { .dir = dir };
	__u64 *v;

	if (!bytes || !other)
		return;
	bpf_get_current_comm(k.comm, sizeof(k.comm));
	v = bpf_map_lookup_elem(bytes, &k);
	if (v) {
		__sync_fetch_and_add(v, n);
		return;
	}
	if (!bpf_map_update_elem(bytes, &k, &n, BPF_NOEXIST))
		return;
	v = bpf_map_lookup_elem(bytes, &k);
	if (v) {
		__sync_fetch_and_add(v, n);
		return;
	}
	v = bpf_map_lookup_elem(other, &dir);
	if (v)
		*v += n;
}

SEC("uretprobe")
int security_ssl_exit(struct pt_regs *ctx)
{
	int slot = opted_slot(SIDECAR_SLOT_TLS_PLAINTEXT);

	if (slot < 0)
		return 0;

	__u64 id = bpf_get_current_pid_tgid();
	struct tls_call *p = bpf_map_lookup_elem(&tls_calls, &id);

	if (!p)
		return 0;

	struct tls_call c = *p;
	__u64 n;

	bpf_map_delete_elem(&tls_calls, &id);
	if (c.cookie & TLS_EX) {
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
	if (!n)
		return 0;

	__u32 dir = c.cookie & 1;

	tls_add(slot, dir, n);

	struct security_config *cfg = sec_config(slot);
	__u32 sample = cfg ? cfg->tls_sample_bytes : 0;

	if (!sample)
		return 0;

	struct security_event *e = reserve(slot, SEC_TLS_SAMPLE);

	if (!e)
		return 0;

	__u32 len = n < sample ? n : sample;

	if (len > SEC_ARGV_LEN)
		len = SEC_ARGV_LEN;
	if (len && !bpf_probe_read_user(e->argv, len & (SEC_ARGV_LEN - 1) ?: SEC_ARGV_LEN, (void *)c.buf))
		e->argv_len = len;
	e->args[0] = dir;
	e->args[1] = n;
	submit(slot, e);
	return 0;
}

#define SIGSYS 31
#define SYS_SECCOMP 1
#define SECCOMP_MODE_DEAD 3

/* A seccomp filter's kill or trap is a SIGSYS the kernel forces on the calling task itself
 * (force_sig_seccomp), with si_code SYS_SECCOMP and the call's number: it runs in that task's
 * context, so its slot is the current one. A kill first marks the task SECCOMP_MODE_DEAD, a trap
 * does not. Not seen: SECCOMP_RET_KILL_THREAD on one thread of several (that thread exits
 * without a signal). */
SEC("tp_btf/signal_generate")
int BPF_PROG(security_seccomp, int sig, struct kernel_siginfo *info, struct task_struct *task,
	     int group, int result)
{
	if (sig != SIGSYS || BPF_CORE_READ(info, si_code) != SYS_SECCOMP)
		return 0;

	int slot = sidecar_slot();

	if (slot < 0)
		return 0;

	__u32 nr = (__u32)BPF_CORE_READ(info, _sifields._sigsys._syscall);
	int dead = BPF_CORE_READ(task, seccomp.mode) == SECCOMP_MODE_DEAD;

	if (dead) {
		void *kills = sidecar_slot_map(&seccomp_kills, slot);
		__u32 k = nr < SIDECAR_SYSCALL_SLOTS ? nr : SIDECAR_SYSCALL_SLOTS - 1;
		__u64 *c = kills ? bpf_map_lookup_elem(kills, &k) : NULL;

		if (c)
			__sync_fetch_and_add(c, 1);
	}

	struct security_event *e = reserve(slot, SEC_SECCOMP_KILL);

	if (!e)
		return 0;
	e->nr = nr;
	e->args[0] = dead ? SECCOMP_ACT_KILL : SECCOMP_ACT_TRAP;
	e->args[1] = (__u32)BPF_CORE_READ(info, si_errno); /* the filter's data (SECCOMP_RET_DATA) */
	submit(slot, e);
	return 0;
}
