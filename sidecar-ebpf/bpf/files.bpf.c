// SPDX-License-Identifier: GPL-2.0
/* Files family: bytes read and written by path, opens by result and failing path, fsync-style
 * calls and their latency, page cache misses.
 *
 * Paths: tracing programs cannot call bpf_d_path here, so the path is the one the target gave to
 * open/openat/openat2/creat, remembered by the opened `struct file` (not by fd number): dup'ed
 * fds and fds shared with forked children point at the same struct file and keep their path, and
 * a recycled fd number cannot inherit a stale one. The inode is remembered with it, so a freed and
 * reused struct file is not mistaken for the old one. Reads and writes on a struct file whose open
 * we did not see (opened before the sidecar started, or outside the target and passed in) count
 * under their kind instead (FILE_KIND_UNKNOWN_PATH for regular files).
 *
 * Hooks: tp_btf sys_exit (everything: the arguments are still in the saved registers), the
 * enter tracepoints of the sync calls (to time them; raw_tp sys_enter without tracefs), raw_tp
 * mm_filemap_add_to_page_cache.
 *
 * Every table is per target (SIDECAR_SLOT_MAP: an inner map per slot, which that target's
 * sidecar creates and reads); only the sync start times (task storage: a task is in one target)
 * and the scratch areas are shared. */
#include "sidecar.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* x86_64 syscall numbers */
#define NR_read 0
#define NR_write 1
#define NR_open 2
#define NR_pread64 17
#define NR_pwrite64 18
#define NR_readv 19
#define NR_writev 20
#define NR_sendfile 40
#define NR_fsync 74
#define NR_fdatasync 75
#define NR_creat 85
#define NR_openat 257
#define NR_splice 275
#define NR_sync_file_range 277
#define NR_preadv 295
#define NR_pwritev 296
#define NR_copy_file_range 326
#define NR_preadv2 327
#define NR_pwritev2 328
#define NR_openat2 437

#define S_IFMT 0170000
#define S_IFSOCK 0140000
#define S_IFBLK 0060000
#define S_IFREG 0100000
#define S_IFCHR 0020000
#define S_IFIFO 0010000

struct remembered {
	__u64 inode;
	__u32 id; /* index in file_io, SIDECAR_FILE_PATHS when the path table is full */
	__u32 pad;
};

/* Files the target opened, by struct file address. LRU: closed files are never removed
 * explicitly (close does not tell whether it dropped the last reference); they age out. Per
 * target: the id it remembers is an index in that target's path table. */
struct files_open_map {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	SIDECAR_INNER_KV(__u64, struct remembered);
};
SIDECAR_SLOT_MAP(files_open, struct files_open_map);

/* Path -> small id, looked up once per open; reads and writes then index an array by id instead
 * of hashing a 256-byte path on every call. Userspace reads it for the names. */
struct file_path_ids_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SIDECAR_FILE_PATHS);
	SIDECAR_INNER_KV(struct file_path, __u32);
};
SIDECAR_SLOT_MAP(file_path_ids, struct file_path_ids_map);

/* The next id to hand out (entry 0). Plain (not atomic: BPF v1 has no fetch-and-add): two CPUs
 * may read the same value, and the claim below lets only one of them have it. */
struct file_next_id_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	SIDECAR_INNER_KV(__u32, __u32);
};
SIDECAR_SLOT_MAP(file_next_id, struct file_next_id_map);

struct file_path_claims_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SIDECAR_FILE_PATHS);
	SIDECAR_INNER_KV(__u32, __u32);
};
SIDECAR_SLOT_MAP(file_path_claims, struct file_path_claims_map);

struct file_io_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SIDECAR_FILE_PATHS);
	SIDECAR_INNER_KV(__u32, struct file_io);
};
SIDECAR_SLOT_MAP(file_io, struct file_io_map);

struct file_kind_io_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FILE_KINDS);
	SIDECAR_INNER_KV(__u32, struct file_io);
};
SIDECAR_SLOT_MAP(file_kind_io, struct file_kind_io_map);

struct file_opens_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SIDECAR_ERRNO_SLOTS);
	SIDECAR_INNER_KV(__u32, __u64);
};
SIDECAR_SLOT_MAP(file_opens, struct file_opens_map);

struct file_open_errors_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	SIDECAR_INNER_KV(struct open_error_key, __u64);
};
SIDECAR_SLOT_MAP(file_open_errors, struct file_open_errors_map);

struct file_syncs_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FILE_SYNC_CALLS);
	SIDECAR_INNER_KV(__u32, struct file_sync_stats);
};
SIDECAR_SLOT_MAP(file_syncs, struct file_syncs_map);

struct files_counters_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FILES_COUNTERS);
	SIDECAR_INNER_KV(__u32, __u64);
};
SIDECAR_SLOT_MAP(files_counters, struct files_counters_map);

struct sync_start {
	__u64 ts;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sync_start);
} file_sync_start SEC(".maps");

/* Path-sized work areas: too big for the 512-byte stack. */
struct scratch {
	struct file_path p;
	struct open_error_key e;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} files_scratch SEC(".maps");

static __always_inline void bump_counter(__u32 slot, __u32 idx, __u64 n)
{
	void *m = sidecar_slot_map(&files_counters, slot);
	__u64 *c = m ? bpf_map_lookup_elem(m, &idx) : NULL;

	if (c)
		*c += n;
}

static __always_inline struct file *fd_file(__u64 fd)
{
	/* Direct (BTF) loads down to the fd array: a probe read per step costs more. */
	struct task_struct *task = bpf_get_current_task_btf();
	struct files_struct *files = task->files;
	struct file *f = NULL;

	if (!files)
		return NULL;
	struct fdtable *fdt = files->fdt;

	if (!fdt || fd >= fdt->max_fds)
		return NULL;
	bpf_probe_read_kernel(&f, sizeof(f), (void *)fdt->fd + fd * sizeof(f));
	return f;
}

static __always_inline __u32 kind_of(struct inode *ino)
{
	__u32 mode = BPF_CORE_READ(ino, i_mode) & S_IFMT;

	if (mode == S_IFREG)
		return FILE_KIND_UNKNOWN_PATH;
	if (mode == S_IFSOCK)
		return FILE_KIND_SOCKET;
	if (mode == S_IFIFO)
		return FILE_KIND_PIPE;
	if (mode == S_IFBLK)
		return FILE_KIND_BLOCK;
	if (mode == S_IFCHR) {
		__u32 major = BPF_CORE_READ(ino, i_rdev) >> 20;

		/* ttys (4), /dev/tty and /dev/console (5), pseudo-terminal slaves (136-143) */
		if (major == 4 || major == 5 || (major >= 136 && major <= 143))
			return FILE_KIND_TTY;
		return FILE_KIND_CHAR;
	}
	return FILE_KIND_OTHER;
}

static __always_inline void add_io(struct file_io *io, __u64 bytes, int write)
{
	if (write)
		io->write_bytes += bytes;
	else
		io->read_bytes += bytes;
}

static __always_inline void account(__u32 slot, __u64 fd, __u64 bytes, int write)
{
	struct file *f = fd_file(fd);

	if (!f)
		return;

	struct inode *ino = BPF_CORE_READ(f, f_inode);
	__u64 key = (__u64)f;
	void *open = sidecar_slot_map(&files_open, slot);
	struct remembered *r = open ? bpf_map_lookup_elem(open, &key) : NULL;
	void *m;
	__u32 kind;

	if (r && r->inode == (__u64)ino) {
		__u32 id = r->id;
		struct file_io *io = NULL;

		m = sidecar_slot_map(&file_io, slot);
		if (m)
			io = bpf_map_lookup_elem(m, &id);

		if (io) {
			add_io(io, bytes, write);
			return;
		}
		kind = FILE_KIND_UNMAPPED;
	} else {
		kind = kind_of(ino);
	}

	m = sidecar_slot_map(&file_kind_io, slot);
	struct file_io *io = m ? bpf_map_lookup_elem(m, &kind) : NULL;

	if (io)
		add_io(io, bytes, write);
}

static __always_inline void read_path(char *dst, const char *user)
{
	/* The path is part of a hash key: bytes after its NUL must be zero, not left over. */
	__builtin_memset(dst, 0, SIDECAR_PATH_LEN);
	bpf_probe_read_user_str(dst, SIDECAR_PATH_LEN, user);
}

static __always_inline void opened(__u32 slot, const char *user_path, long ret)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&files_scratch, &zero);
	void *opens = sidecar_slot_map(&file_opens, slot);

	if (!s || !opens)
		return;

	if (ret >= 0) {
		__u32 ok = 0;
		__u64 *c = bpf_map_lookup_elem(opens, &ok);

		if (c)
			*c += 1;

		struct file *f = fd_file(ret);

		if (!f)
			return;
		__u64 key = (__u64)f;
		struct inode *ino = BPF_CORE_READ(f, f_inode);

		/* Only regular files are reported by path; /dev/null and friends by kind. */
		if ((BPF_CORE_READ(ino, i_mode) & S_IFMT) != S_IFREG)
			return;
		void *open = sidecar_slot_map(&files_open, slot);
		void *ids = sidecar_slot_map(&file_path_ids, slot);
		void *claims = sidecar_slot_map(&file_path_claims, slot);
		void *next_m = sidecar_slot_map(&file_next_id, slot);
		__u32 *next = next_m ? bpf_map_lookup_elem(next_m, &zero) : NULL;

		if (!open || !ids || !claims || !next)
			return;
		read_path(s->p.path, user_path);

		struct remembered r = { .inode = (__u64)ino, .id = SIDECAR_FILE_PATHS };
		__u32 *idp = bpf_map_lookup_elem(ids, &s->p);

		if (idp) {
			r.id = *idp;
		} else {
			__u32 id = *next, one = 1;

			*next = id + 1;
			if (id < SIDECAR_FILE_PATHS &&
			    !bpf_map_update_elem(claims, &id, &one, BPF_NOEXIST)) {
				if (!bpf_map_update_elem(ids, &s->p, &id, BPF_NOEXIST))
					r.id = id;
				else if ((idp = bpf_map_lookup_elem(ids, &s->p)))
					r.id = *idp; /* another CPU named it first; our id stays unused */
			}
		}
		if (bpf_map_update_elem(open, &key, &r, BPF_ANY))
			bump_counter(slot, FILES_LOST_FDS, 1);
		return;
	}

	__u32 err = (__u32)(-ret);
	__u32 eslot = err < SIDECAR_ERRNO_SLOTS ? err : SIDECAR_ERRNO_SLOTS - 1;
	__u64 *c = bpf_map_lookup_elem(opens, &eslot);
	void *errors = sidecar_slot_map(&file_open_errors, slot);

	if (c)
		*c += 1;
	if (!errors)
		return;

	read_path(s->e.path, user_path);
	s->e.err = eslot;
	s->e.pad = 0;
	c = bpf_map_lookup_elem(errors, &s->e);
	if (!c) {
		__u64 one = 0;

		bpf_map_update_elem(errors, &s->e, &one, BPF_NOEXIST);
		c = bpf_map_lookup_elem(errors, &s->e);
	}
	if (c)
		*c += 1;
	else
		bump_counter(slot, FILES_LOST_OPEN_ERRORS, 1);
}

static __always_inline int sync_call(__u64 nr)
{
	if (nr == NR_fsync)
		return FILE_SYNC_FSYNC;
	if (nr == NR_fdatasync)
		return FILE_SYNC_FDATASYNC;
	if (nr == NR_sync_file_range)
		return FILE_SYNC_RANGE;
	return -1;
}

static __always_inline int interesting(__u64 nr)
{
	switch (nr) {
	case NR_read: case NR_write: case NR_open: case NR_pread64: case NR_pwrite64:
	case NR_readv: case NR_writev: case NR_sendfile: case NR_fsync: case NR_fdatasync:
	case NR_creat: case NR_openat: case NR_splice: case NR_sync_file_range: case NR_preadv:
	case NR_pwritev: case NR_copy_file_range: case NR_preadv2: case NR_pwritev2:
	case NR_openat2:
		return 1;
	}
	return 0;
}

/* A sync call of the target starts: stamp it for the exit. */
static __always_inline void sync_started(void)
{
	int slot = sidecar_slot();

	if (slot < 0 || sidecar_slot_wants(slot, SIDECAR_SLOT_FILES_OFF))
		return;

	struct sync_start *v = bpf_task_storage_get(&file_sync_start, bpf_get_current_task_btf(), 0,
						    BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (v)
		v->ts = bpf_ktime_get_ns();
}

/* Default: on the enter tracepoints of fsync, fdatasync and sync_file_range only. */
SEC("tracepoint/syscalls/sys_enter_fsync")
int files_sync_enter(void *ctx)
{
	sync_started();
	return 0;
}

/* Without tracefs: on every syscall of the host. raw_tp args: ctx[0] = struct pt_regs *,
 * ctx[1] = syscall number */
SEC("raw_tp/sys_enter")
int files_sys_enter(unsigned long long *ctx)
{
	/* The syscall number is cheaper than the filter. */
	if (sync_call(ctx[1]) >= 0)
		sync_started();
	return 0;
}

/* tp_btf args: ctx[0] = struct pt_regs * (typed: plain loads), ctx[1] = return value */
SEC("tp_btf/sys_exit")
int files_sys_exit(unsigned long long *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx[0];
	__u64 nr = regs->orig_ax;

	/* Runs on every syscall of the host: one plain load and a compare reject the calls this
	 * family never looks at before the (dearer) target filter. */
	if (!interesting(nr))
		return 0;

	int slot = sidecar_slot();

	/* --cpu-budget may pause the family (SIDECAR_SLOT_FILES_OFF). */
	if (slot < 0 || sidecar_slot_wants(slot, SIDECAR_SLOT_FILES_OFF))
		return 0;

	long ret = (long)ctx[1];

	switch (nr) {
	case NR_read:
	case NR_pread64:
	case NR_readv:
	case NR_preadv:
	case NR_preadv2:
		if (ret > 0)
			account(slot, regs->di, ret, 0);
		return 0;
	case NR_write:
	case NR_pwrite64:
	case NR_writev:
	case NR_pwritev:
	case NR_pwritev2:
		if (ret > 0)
			account(slot, regs->di, ret, 1);
		return 0;
	case NR_sendfile: /* (out_fd, in_fd, ...) */
		if (ret > 0) {
			account(slot, regs->si, ret, 0);
			account(slot, regs->di, ret, 1);
		}
		return 0;
	case NR_copy_file_range: /* (fd_in, off_in, fd_out, ...) */
		if (ret > 0) {
			account(slot, regs->di, ret, 0);
			account(slot, regs->dx, ret, 1);
		}
		return 0;
	case NR_splice: /* (fd_in, off_in, fd_out, off_out, ...) */
		if (ret > 0) {
			account(slot, regs->di, ret, 0);
			account(slot, regs->dx, ret, 1);
		}
		return 0;
	case NR_open:
	case NR_creat:
		opened(slot, (const char *)regs->di, ret);
		return 0;
	case NR_openat:
	case NR_openat2:
		opened(slot, (const char *)regs->si, ret);
		return 0;
	}

	int call = sync_call(nr);

	if (call < 0)
		return 0;

	struct sync_start *v = bpf_task_storage_get(&file_sync_start, bpf_get_current_task_btf(), 0, 0);

	if (!v || !v->ts)
		return 0; /* entered before we attached */

	__u64 delta = bpf_ktime_get_ns() - v->ts;
	__u32 idx = call;
	void *syncs = sidecar_slot_map(&file_syncs, slot);
	struct file_sync_stats *st = syncs ? bpf_map_lookup_elem(syncs, &idx) : NULL;

	v->ts = 0;
	if (st) {
		st->calls++;
		st->time_ns += delta;
		st->hist[sidecar_hist_bucket(delta)]++;
	}
	return 0;
}

/* raw_tp args: ctx[0] = struct folio * (a folio read from storage into the page cache: a miss,
 * readahead included) */
SEC("raw_tp/mm_filemap_add_to_page_cache")
int files_page_cache_add(unsigned long long *ctx)
{
	int slot = sidecar_slot();

	/* --cpu-budget may pause the family (SIDECAR_SLOT_FILES_OFF). */
	if (slot < 0 || sidecar_slot_wants(slot, SIDECAR_SLOT_FILES_OFF))
		return 0;

	struct folio *folio = (struct folio *)ctx[0];
	__u64 flags = 0, pages = 1;

	/* folio->flags is an unsigned long, or a one-word struct on newer kernels: read the word. */
	bpf_probe_read_kernel(&flags, sizeof(flags), &folio->flags);
	if (flags & (1ULL << bpf_core_enum_value(enum pageflags, PG_head))) {
		__u64 order = BPF_CORE_READ(folio, _flags_1) & 0xff;

		pages = order < 32 ? 1ULL << order : 1;
	}
	bump_counter(slot, FILES_PAGE_CACHE_MISSES, pages);
	return 0;
}
