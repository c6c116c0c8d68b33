/* Structs shared by the kernel programs and userspace (mirrored in sidecar-ebpf/src/lib.rs's
 * MIRRORS; sidecar/tests/mirrors.rs compares every mirror with the compiled objects' BTF: names,
 * offsets, sizes). Fixed-width fields, explicit padding: the Rust side reads these as plain bytes. */
#ifndef SIDECAR_H
#define SIDECAR_H

#define SIDECAR_COMM_LEN 16
/* Syscall numbers at or above this are counted in the last slot ("other"). */
#define SIDECAR_SYSCALL_SLOTS 512
/* log2 buckets of nanoseconds: bucket b holds durations in [2^b, 2^(b+1)) ns; the last bucket
 * holds everything longer. */
#define SIDECAR_HIST_BUCKETS 40

/* How programs decide whether the current task belongs to the target. */
enum sidecar_filter_mode {
	SIDECAR_FILTER_NONE = 0,   /* target is down: count nothing */
	SIDECAR_FILTER_CGROUP = 1, /* cgroup v2 id equals cgroup_id */
	SIDECAR_FILTER_PIDNS = 2,  /* task is in pid namespace (pidns_dev, pidns_ino), minus self_tgid */
	SIDECAR_FILTER_TREE = 3,   /* task's tgid is in sidecar_tree (a process and its descendants) */
};

/* --target-tree: the most processes one tree may have at once. */
#ifndef SIDECAR_TREE_MAX
#define SIDECAR_TREE_MAX 16384
#endif

/* One kernel side serves up to this many targets (`--max-targets`, at most this): each is a slot,
 * and each family's per-target maps are inner maps of an array-of-maps indexed by slot. A
 * private kernel side uses slot 0 only. */
#define SIDECAR_MAX_SLOTS 256
/* The cgroup id -> slot table: open addressing over an array (a lookup is a few loads, no hash
 * map call, on every hooked event of the host); a key sits within SIDECAR_CGROUP_PROBES places
 * of its hash. */
#define SIDECAR_CGROUP_TABLE 1024
#define SIDECAR_CGROUP_PROBES 8
/* A removed entry: the probe sequence goes on past it. */
#define SIDECAR_CGROUP_TOMBSTONE 0xffffffffffffffffULL

/* Per-slot settings (the entry `slot` of `sidecar_slots`): how to recognise the target's tasks,
 * and what the sidecar that owns the slot asked for. */
struct sidecar_target {
	__u64 cgroup_id;
	__u64 pidns_dev;
	__u64 pidns_ino;
	__u32 mode;
	__u32 self_tgid; /* the sidecar's own tgid as seen in that pid namespace (PIDNS mode) */
	__u64 flags;     /* SIDECAR_SLOT_* */
};

/* Options a family checks per slot (programs are shared, so `const volatile` settings cannot
 * differ between targets). */
#define SIDECAR_SLOT_SYSCALL_LATENCY (1ULL << 0)
#define SIDECAR_SLOT_SYSCALL_COUNTING (1ULL << 1)
/* --cpu-budget: syscall latency timed for about 1 call in 2^k per thread (k in bits 4-6, 0: every
 * call); each timed call stands for 2^k in the histograms and time sums, so they stay unbiased. */
#define SIDECAR_SLOT_SYSCALL_SAMPLE_SHIFT 4
#define SIDECAR_SLOT_SYSCALL_SAMPLE_MASK (7ULL << SIDECAR_SLOT_SYSCALL_SAMPLE_SHIFT)
/* --cpu-budget: the files family pauses (bit 8); the profiler keeps 1 sample in 2^k, each
 * counting for 2^k (k in bits 9-10). */
#define SIDECAR_SLOT_FILES_OFF (1ULL << 8)
#define SIDECAR_SLOT_PROFILE_SHIFT 9
#define SIDECAR_SLOT_PROFILE_MASK (3ULL << SIDECAR_SLOT_PROFILE_SHIFT)
/* security's opt-in uprobes (--capture-bash-readline, --tls-plaintext): a uprobe on a binary
 * fires for every slot whose processes map it. */
#define SIDECAR_SLOT_BASH_READLINE (1ULL << 12)
#define SIDECAR_SLOT_TLS_PLAINTEXT (1ULL << 13)
/* net: HTTP/1.x from TCP segments (--net-http on), from read/write syscalls (--net-http syscalls,
 * or --net-mode netns), keyed by path too (--http-paths); connection events (--net-events). */
#define SIDECAR_SLOT_NET_HTTP_PACKETS (1ULL << 20)
#define SIDECAR_SLOT_NET_HTTP_SYSCALLS (1ULL << 21)
#define SIDECAR_SLOT_NET_HTTP_PATHS (1ULL << 22)
#define SIDECAR_SLOT_NET_EVENTS (1ULL << 23)
/* net: the protocols other than HTTP/1 recognised in TCP segments (--protocols). */
#define SIDECAR_SLOT_NET_REDIS (1ULL << 24)
#define SIDECAR_SLOT_NET_POSTGRES (1ULL << 25)
#define SIDECAR_SLOT_NET_MYSQL (1ULL << 26)
#define SIDECAR_SLOT_NET_PROTOS                                                                    \
	(SIDECAR_SLOT_NET_REDIS | SIDECAR_SLOT_NET_POSTGRES | SIDECAR_SLOT_NET_MYSQL)
/* (bits 24-27: net's other protocols) net: HTTP/1.x inside TLS, from uprobes on OpenSSL's
 * SSL_read/SSL_write in the target's processes (net_tls.bpf.h). */
#define SIDECAR_SLOT_NET_HTTPS (1ULL << 28)
/* runtimes (bits 16-23): --runtime-calls (the pack's function__entry sites count), and
 * --http-paths (HTTP requests keep their path). */
#define SIDECAR_SLOT_RUNTIME_CALLS (1ULL << 16)
#define SIDECAR_SLOT_RUNTIME_HTTP_PATHS (1ULL << 17)

struct sidecar_cgroup_entry {
	__u64 cgroup_id; /* 0: empty, SIDECAR_CGROUP_TOMBSTONE: removed */
	__u32 slot;
	__u32 _pad;
};

/* --target-tree members: the process's start time (0 when put by userspace) and its slot. */
struct sidecar_tree_entry {
	__u64 start;
	__u32 slot;
	__u32 _pad;
};

/* Filters that are not a cgroup: how many slots follow a tree, and the slot (+1, 0: none) of
 * the one target recognised by pid namespace (a private kernel side only). */
struct sidecar_modes {
	__u32 tree_slots;
	__u32 pidns_slot;
};

/* syscalls: one per syscall number, per CPU. */
struct syscall_stats {
	__u64 calls;
	__u64 time_ns;
	__u64 hist[SIDECAR_HIST_BUCKETS];
};

struct syscall_error_key {
	__u32 nr;
	__u32 err; /* positive errno */
};

/* process */
struct comm_key {
	char comm[SIDECAR_COMM_LEN];
};

struct exit_key {
	char comm[SIDECAR_COMM_LEN];
	__u32 code;   /* exit status (0..255) when the process exited normally */
	__u32 signal; /* terminating signal, 0 when it exited normally */
};

enum process_counter {
	PROCESS_FORKS = 0,       /* new processes (clone without CLONE_THREAD) */
	PROCESS_THREADS = 1,     /* new threads */
	PROCESS_OOM_KILLS = 2,   /* processes that died as OOM victims */
	PROCESS_LOST_EXECS = 3,  /* exec keys that did not fit the map */
	PROCESS_LOST_EXITS = 4,  /* exit keys that did not fit the map */
	PROCESS_EXITS = 5,       /* all process exits (including those lost above) */
	PROCESS_EXECS = 6,       /* all execs (including those lost above) */
	PROCESS_COUNTERS = 8,
};

enum syscalls_counter {
	SYSCALLS_LOST_STARTS = 0, /* in-flight table full: the call's duration was not measured */
	SYSCALLS_LOST_ERRORS = 1, /* error table full */
	SYSCALLS_LOST_DENIED = 2, /* refused-call table full */
	SYSCALLS_COUNTERS = 4,
};

/* security: events through the ring buffer */
#define SEC_PATH_LEN 128
#define SEC_ARGV_LEN 256
#define SEC_PREFIXES 16
#define SEC_PREFIX_LEN 64

enum security_kind {
	SEC_EXEC = 1,            /* any exec: filename, argv */
	SEC_SHELL = 2,           /* a shell exec'd by a non-shell */
	SEC_PRIVILEGE = 3,       /* setuid/setgid/setres*id/setre*id/capset */
	SEC_PTRACE = 4,
	SEC_NAMESPACE = 5,       /* mount, umount2, unshare, setns */
	SEC_MODULE = 6,          /* init_module, finit_module */
	SEC_BPF = 7,             /* bpf() */
	SEC_SENSITIVE_OPEN = 8,  /* open for write of a configured path prefix */
	SEC_CONNECT_NEW_PEER = 9,
	SEC_LISTEN_NEW_PORT = 10,
	SEC_BASH_READLINE = 11,  /* opt-in: a line bash read (argv holds it) */
	SEC_TLS_SAMPLE = 12,     /* opt-in: first bytes of an SSL_read/SSL_write (argv holds them) */
	SEC_SECCOMP_KILL = 13,   /* SIGSYS from a seccomp filter: nr, args[0] = enum seccomp_act */
	SEC_KINDS = 14,
};

struct security_event {
	__u64 ts_ns;   /* CLOCK_MONOTONIC */
	__u32 kind;
	__u32 pid;     /* host tgid */
	__u32 ns_pid;  /* tgid in the task's own pid namespace (the container's view) */
	__u32 ppid;    /* host tgid of the parent */
	__u32 uid;
	__u32 nr;      /* syscall number, for syscall kinds */
	__u64 args[4]; /* first syscall arguments */
	__u8 addr[16]; /* peer address (IPv4 in the first 4 bytes) */
	__u16 port;    /* peer or listening port, host order */
	__u16 family;  /* AF_INET, AF_INET6 */
	__u32 argv_len;
	char comm[SIDECAR_COMM_LEN];
	char pcomm[SIDECAR_COMM_LEN];
	char path[SEC_PATH_LEN];  /* exec filename, opened path, mount target */
	char argv[SEC_ARGV_LEN];  /* NUL-separated, truncated */
};

struct sec_prefix {
	__u32 len;
	char bytes[SEC_PREFIX_LEN];
};

enum security_counter {
	SEC_LOST = 0, /* ring buffer full: events dropped (per kind below, +kind) */
};

/* Which of the family's syscall-entry programs reports a slot's syscalls: a shared kernel side
 * may have several attached at once (sidecars with and without the syscalls family's jump slot,
 * with and without tracefs), and each call must be reported once. */
enum security_hook {
	SEC_HOOK_NONE = 0,
	SEC_HOOK_TRACEPOINTS = 1, /* security_syscall on syscalls:sys_enter_<name> */
	SEC_HOOK_RAW = 2,         /* security_sys_enter_raw on raw sys_enter */
	SEC_HOOK_DISPATCH = 3,    /* security_sys_enter, tail-called by the syscalls family */
};

/* What a seccomp filter did to a call, for seccomp_kill events (args[0]). */
enum seccomp_act {
	SECCOMP_ACT_TRAP = 1, /* SIGSYS sent, the process may handle it */
	SECCOMP_ACT_KILL = 2, /* the task is dead (SECCOMP_RET_KILL_PROCESS, _KILL_THREAD) */
};

/* Per-slot settings of the security family (the single entry of the slot's security_config). */
struct security_config {
	__u32 syscall_hook;     /* enum security_hook */
	__u32 tls_sample_bytes; /* bytes per tls_sample event (0: none) */
};

_Static_assert(sizeof(struct sidecar_target) == 40, "mirrored in Rust");
_Static_assert(sizeof(struct sidecar_cgroup_entry) == 16, "mirrored in Rust");
_Static_assert(sizeof(struct sidecar_tree_entry) == 16, "mirrored in Rust");
_Static_assert(sizeof(struct security_event) == 504, "mirrored in Rust");
_Static_assert(sizeof(struct security_config) == 8, "mirrored in Rust");
/* disk: block requests by (device, op), attributed to the cgroup that created them. */
enum disk_op {
	DISK_OP_READ = 0,
	DISK_OP_WRITE = 1,
	DISK_OP_FLUSH = 2,
	DISK_OP_DISCARD = 3,
	DISK_OP_OTHER = 4, /* write-zeroes, zone management, ... */
};

struct disk_io_key {
	__u32 major; /* of the whole disk (gendisk), not the partition */
	__u32 minor; /* the disk's first minor */
	__u32 op;    /* enum disk_op */
	__u32 pad;
};

struct disk_io_stats {
	__u64 requests;
	__u64 bytes;
	__u64 request_ns; /* sum of issue -> complete */
	__u64 queue_ns;   /* sum of insert (or creation) -> issue */
	__u64 untimed;    /* requests whose completion was not delivered: in requests and bytes only */
	__u64 request_hist[SIDECAR_HIST_BUCKETS];
	__u64 queue_hist[SIDECAR_HIST_BUCKETS];
};

enum disk_counter {
	DISK_LOST_REQUESTS = 0, /* in-flight table full at creation, or ended unseen before its issue */
	DISK_LOST_KEYS = 1,     /* (device, op) table full: a completion was dropped */
	DISK_COUNTERS = 4,
};

/* files: VFS-level reads/writes by path, opens, syncs, page cache misses. */
#define SIDECAR_PATH_LEN 256
/* Open results: slot 0 = success, slot e = errno e; errnos at or above the last slot share it. */
#define SIDECAR_ERRNO_SLOTS 256

/* Distinct paths the kernel keeps bytes for; later paths are counted in FILE_KIND_UNMAPPED. */
#define SIDECAR_FILE_PATHS 4096

struct file_path {
	char path[SIDECAR_PATH_LEN];
};

struct file_io {
	__u64 read_bytes;
	__u64 write_bytes;
};

/* What the fd a read/write went through points at. */
enum file_kind {
	FILE_KIND_UNKNOWN_PATH = 0, /* regular file whose open we did not see */
	FILE_KIND_SOCKET = 1,
	FILE_KIND_PIPE = 2,
	FILE_KIND_TTY = 3,
	FILE_KIND_CHAR = 4,   /* other character devices (/dev/null, /dev/urandom, ...) */
	FILE_KIND_BLOCK = 5,
	FILE_KIND_OTHER = 6,  /* anonymous inodes (eventfd, ...), directories */
	FILE_KIND_UNMAPPED = 7, /* regular file with a known path that did not fit the path table */
	FILE_KINDS = 8,
};

struct open_error_key {
	char path[SIDECAR_PATH_LEN];
	__u32 err;
	__u32 pad;
};

enum file_sync_call {
	FILE_SYNC_FSYNC = 0,
	FILE_SYNC_FDATASYNC = 1,
	FILE_SYNC_RANGE = 2,
	FILE_SYNC_CALLS = 3,
};

struct file_sync_stats {
	__u64 calls;
	__u64 time_ns;
	__u64 hist[SIDECAR_HIST_BUCKETS];
};

enum files_counter {
	FILES_PAGE_CACHE_MISSES = 0, /* pages added to the page cache */
	FILES_LOST_OPEN_ERRORS = 1,  /* failed opens whose (path, errno) did not fit the table */
	FILES_LOST_FDS = 2,          /* opened files that could not be remembered */
	FILES_COUNTERS = 4,
};

/* cpu: scheduler accounting */
enum cpu_hist {
	CPU_HIST_SLICE = 0,        /* on-CPU slices (cpudist) */
	CPU_HIST_RUNQUEUE = 1,     /* wakeup or preemption to running (runqlat) */
	CPU_HIST_OFF_SLEEPING = 2, /* off-CPU, interruptible sleep */
	CPU_HIST_OFF_BLOCKED = 3,  /* off-CPU, uninterruptible (I/O, locks) */
	CPU_HISTS = 4,
};

enum cpu_counter {
	CPU_SWITCH_VOLUNTARY = 0,
	CPU_SWITCH_INVOLUNTARY = 1,
	CPU_MIGRATIONS = 2,
	CPU_LOST_COMMS = 3,
	CPU_COUNTERS = 4,
};

struct cpu_hist_val {
	__u64 sum_ns;
	__u64 hist[SIDECAR_HIST_BUCKETS];
};

/* profile: sampled stacks */
struct profile_key {
	__u32 pid;          /* tgid as the sidecar sees it (its own pid namespace), 0 if invisible */
	__u32 generation; /* drain generation: userspace flips it, then drains the old one */
	__s32 user_stack;   /* stack map ids, negative when unavailable */
	__s32 kernel_stack;
	char comm[SIDECAR_COMM_LEN];
};

struct profile_cfg {
	__u64 pidns_dev; /* the sidecar's own pid namespace */
	__u64 pidns_ino;
	__u32 generation;
	__u32 pad;
};

/* runtimes: USDT argument specs, one per attached probe site, found by the attach cookie
 * (libbpf's usdt.bpf.h cannot be used with aya, so this is our own, smaller form of it). */
#define USDT_MAX_ARGS 12
#define USDT_NO_ARG 0xffffffff
#define RT_STR_LEN 64

enum usdt_arg_kind {
	USDT_ARG_CONST = 0,     /* val_off is the value */
	USDT_ARG_REG = 1,       /* value of the register at reg_off in pt_regs */
	USDT_ARG_REG_DEREF = 2, /* memory at reg + val_off */
	USDT_ARG_SIB = 3,       /* memory at reg + (idx_reg << scale_shift) + val_off */
};

struct usdt_arg {
	__u64 val_off;
	__u32 kind;
	__u16 reg_off;
	__u16 idx_reg_off;
	__u8 scale_shift;
	__u8 bitshift; /* 64 - 8 * size: shifts out the bytes beyond the argument's width */
	__u8 is_signed;
	__u8 _pad[5];
};

struct usdt_spec {
	struct usdt_arg args[USDT_MAX_ARGS];
	__u32 arg_cnt;
	__u32 slot;       /* the pack entry this site feeds (metric + runtime), chosen by userspace */
	__u32 label_arg;  /* argument giving the low 32 bits of the label, or USDT_NO_ARG */
	__u32 label2_arg; /* argument giving the high 32 bits of the label, or USDT_NO_ARG */
};

/* Counts and timings are keyed by pack entry and integer label. */
struct rt_key {
	__u32 slot;
	__u32 _pad;
	__u64 label;
};

struct rt_hist {
	__u64 count;
	__u64 sum_ns;
	__u64 hist[SIDECAR_HIST_BUCKETS];
};

/* Function calls by module (file) and function name. */
struct rt_call_key {
	__u32 slot;
	__u32 _pad;
	char module[RT_STR_LEN];
	char function[RT_STR_LEN];
};

/* runtimes: a target's settings (its `rt_config` entry). The pid namespace of its sidecar when
 * that is not the initial one (a `--pid=container:` sidecar: st_dev, st_ino of
 * /proc/self/ns/pid; zeros otherwise): the scanner registers node pids as it reads them in /proc
 * there (the app is PID 1), not as the kernel numbers them globally. */
struct rt_config {
	__u64 pidns_dev;
	__u64 pidns_ino;
};

enum runtimes_counter {
	RT_LOST_KEYS = 0,      /* label keys that did not fit their map */
	RT_LOST_BEGINS = 1,    /* begin/end pairs that could not be tracked (in-flight table full) */
	RT_UNMATCHED_ENDS = 2, /* end seen without its begin (attached mid-pair) */
	RT_BAD_SPECS = 3,      /* a site fired without a spec or with an unreadable argument */
	RT_COUNTERS = 4,
};


/* net (packets by cgroup_skb, TCP lifecycle, socket errors) */
#define NET_DIRS 2     /* 0 ingress, 1 egress */
#define NET_FAMILIES 3 /* 0 ipv4, 1 ipv6, 2 other */
#define NET_PROTOS 5   /* 0 tcp, 1 udp, 2 icmp, 3 icmpv6, 4 other */
#define NET_PKT_SLOTS (NET_DIRS * NET_FAMILIES * NET_PROTOS)
/* Peers kept in the kernel; closes from further peers add to NET_OTHER_SENT/RECEIVED. */
#define NET_PEERS_MAX 1024
/* Live TCP connections followed per target (connect latency, lifetime, bytes at close); more at
 * once add to NET_LOST_CONNS. */
#define NET_CONNS_MAX 16384
#define NET_HIST_CONNECT 0  /* index in net_hists: connect latency */
#define NET_HIST_LIFETIME 1 /* connection lifetime */

struct net_pkt_stats {
	__u64 packets;
	__u64 bytes; /* IP datagram lengths: IP header + transport header + payload */
};

struct net_peer_key {
	__u8 addr[16]; /* IPv4 in the first 4 bytes */
	__u16 family;  /* AF_INET or AF_INET6 */
	__u16 port;    /* remote port, host byte order */
	__u32 pad;
};

struct net_peer_stats {
	__u64 sent;     /* payload bytes acknowledged by the peer */
	__u64 received; /* payload bytes received from the peer */
	__u64 closed;   /* connections closed */
};

struct net_error_key {
	__u32 kind; /* NET_ERR_CONNECT or NET_ERR_BIND */
	__u32 err;  /* positive errno */
};

enum net_error_kind {
	NET_ERR_CONNECT = 0,
	NET_ERR_BIND = 1, /* bind(2) and listen(2) */
};

enum net_counter {
	NET_CONN_ACTIVE = 0,
	NET_CONN_PASSIVE = 1,
	NET_RETRANSMITS = 2,
	NET_RESETS_SENT = 3,
	NET_RESETS_RECEIVED = 4,
	NET_UDP_DROPS = 5,
	NET_OTHER_SENT = 6,     /* bytes of peers that did not fit net_peers */
	NET_OTHER_RECEIVED = 7,
	NET_OTHER_CLOSED = 8,
	NET_LOST_CONNS = 9,     /* connection table full: not timed, bytes not attributed */
	NET_LOST_KEYS = 10,     /* error or accept table full */
	/* HTTP connections dropped from tracking, once each, by enum net_http_untracked (11..15) */
	NET_HTTP_UNTRACKED = 11,
	NET_COUNTERS = 16,
};

/* Why an HTTP/1.x connection stopped being followed (index from NET_HTTP_UNTRACKED). */
enum net_http_untracked {
	NET_HTTP_UT_GAP = 0,       /* bytes of a head or chunk-size line never seen */
	NET_HTTP_UT_HEAD = 1,      /* head not whole in one segment/read, too long, or not a request or status line where one was due */
	NET_HTTP_UT_BODY = 2,      /* body framing not followed (chunk-size line, Transfer-Encoding, Content-Length) */
	NET_HTTP_UT_PIPELINE = 3,  /* too many requests waiting, an answer without a request, requests both ways */
	NET_HTTP_UT_MIDSTREAM = 4, /* a request line on a connection already carrying data when first seen */
	NET_HTTP_UT_REASONS = 5,
};

/* net: HTTP/1.x request and status lines seen in read/write/recvfrom/sendto payloads */
#define NET_HTTP_METHODS 8 /* GET POST PUT DELETE HEAD PATCH OPTIONS, 7 unused */
#define NET_HTTP_DIRS 2    /* 0 server (request read), 1 client (request written) */

struct net_http_key {
	__u32 dir;
	__u32 method;
	__u32 status; /* 100..599 */
	__u32 tls;    /* 1: read inside TLS (SSL_read/SSL_write), 0: plaintext TCP */
};

/* --http-paths: the request path up to the first ' ', '?' or '#' (query strings never leave the
 * kernel), NUL-padded; cut at NET_HTTP_PATH_LEN. An all-zero path is the overflow slot of a full
 * table (exported as `other`). */
#define NET_HTTP_PATH_LEN 48
#define NET_HTTP_PATHS_MAX 2048

struct net_http_path_key {
	__u32 dir;
	__u32 method;
	__u32 status;
	__u32 tls;
	char path[NET_HTTP_PATH_LEN];
};

/* net: Redis, PostgreSQL and MySQL recognised in the target's TCP segments (net_proto.bpf.h). A
 * connection's protocol is decided from its first payload byte(s), whatever the port. */
enum net_proto {
	NET_PROTO_NONE = 0, /* not recognised: never looked at again */
	NET_PROTO_HTTP = 1,
	NET_PROTO_REDIS = 2,
	NET_PROTO_POSTGRES = 3,
	NET_PROTO_MYSQL = 4,
};

/* What a net_proto_key counts. */
enum net_proto_what {
	NET_PROTO_REQUESTS = 0, /* commands or queries answered (errors included) */
	NET_PROTO_ERRORS = 1,   /* answered with an error */
	NET_PROTO_TLS = 2,      /* PostgreSQL connections that switched to TLS */
};

/* Query kinds (PostgreSQL, MySQL), from the statement's first word. */
enum net_proto_kind {
	NET_KIND_SELECT = 0,
	NET_KIND_INSERT = 1,
	NET_KIND_UPDATE = 2,
	NET_KIND_DELETE = 3,
	NET_KIND_BEGIN = 4,
	NET_KIND_COMMIT = 5,
	NET_KIND_ROLLBACK = 6,
	NET_KIND_OTHER = 7,
	NET_PROTO_KINDS = 8,
};

#define NET_PROTO_NAME_LEN 24
/* Protocols with tables (Redis, PostgreSQL, MySQL: NET_PROTO_* - 2). */
#define NET_PROTO_TABLES 3

struct net_proto_key {
	__u8 proto; /* enum net_proto */
	__u8 dir;   /* 0 server (the target answers), 1 client */
	__u8 what;  /* enum net_proto_what */
	__u8 kind;  /* enum net_proto_kind (PostgreSQL, MySQL) */
	__u32 code; /* MySQL error number */
	char name[NET_PROTO_NAME_LEN]; /* Redis command (lower case), PostgreSQL SQLSTATE class */
};

/* Durations: index ((proto - 2) * 2 + dir) * NET_PROTO_KINDS + kind (Redis: kind 0). */
#define NET_PROTO_HISTS (NET_PROTO_TABLES * 2 * NET_PROTO_KINDS)

/* Why a connection of these protocols stopped being followed; counter index
 * (proto - 2) * NET_PROTO_UT_REASONS + reason. */
enum net_proto_untracked {
	NET_PROTO_UT_GAP = 0,       /* bytes never seen where a message header was due */
	NET_PROTO_UT_HEAD = 1,      /* a header that is not one, or longer than followed */
	NET_PROTO_UT_STEPS = 2,     /* more messages in one segment than followed */
	NET_PROTO_UT_PIPELINE = 3,  /* too many requests waiting, an answer without a request */
	NET_PROTO_UT_MIDSTREAM = 4, /* already carrying data when first seen */
	NET_PROTO_UT_UNSUPPORTED = 5, /* COPY, compression, TLS (MySQL), deep nesting, pub/sub */
	NET_PROTO_UT_REASONS = 6,
};
#define NET_PROTO_COUNTERS (NET_PROTO_TABLES * NET_PROTO_UT_REASONS)

/* net, HTTPS: an OpenSSL connection (SSL *) of a process of the target. The process is part of
 * the key because SSL * addresses repeat across processes. */
#define NET_TLS_CONNS_MAX 4096

struct net_tls_key {
	__u64 ssl;
	__u32 tgid; /* host pid of the process */
	__u32 pad;
};

/* net: DNS, packet capture, connection events (net_pkt.bpf.h, included by net.bpf.c) */
#define NET_DNS_QTYPES 11 /* A AAAA CNAME MX TXT PTR SRV NS SOA ANY other */
#define NET_DNS_RCODES 7  /* NOERROR FORMERR SERVFAIL NXDOMAIN NOTIMP REFUSED other */
#define NET_DNS_SLOTS (NET_DNS_QTYPES + NET_DNS_RCODES) /* queries first, then responses */
/* Largest packet head a capture copies (the ring buffer record holds at most this). */
#define NET_PCAP_SNAP_MAX 4096

/* Written by userspace while a capture is open (index 0 of net_pcap_cfg). */
struct net_pcap_cfg {
	__u32 enabled;
	__u32 snaplen;      /* 1..NET_PCAP_SNAP_MAX */
	__u32 max_pps;      /* packets per second per CPU before the rest are dropped */
	__u32 pad;
};

/* Ring buffer record: this header, then caplen bytes of the packet. */
struct net_pcap_hdr {
	__u64 ts_ns; /* CLOCK_MONOTONIC */
	__u32 len;   /* packet length (from the network header, or the link header on tc) */
	__u32 caplen;
	__u32 dir;   /* 0 ingress, 1 egress */
	__u32 pad;
};

enum net_pkt_counter {
	NET_PCAP_CAPTURED = 0,
	NET_PCAP_DROPPED = 1,   /* ring buffer full */
	NET_PCAP_RATE_DROPPED = 2, /* over max_pps */
	NET_EVENTS_LOST = 3,    /* connection events the ring buffer had no room for */
	NET_DNS_MALFORMED = 4,  /* port-53 payloads that were not a parsable DNS header */
	NET_PKT_COUNTERS = 8,
};

enum net_conn_event_kind {
	NET_EV_CONNECT = 0,
	NET_EV_ACCEPT = 1,
	NET_EV_CLOSE = 2,
};

struct net_conn_event {
	__u64 ts_ns;       /* CLOCK_MONOTONIC */
	__u64 duration_ns; /* connect: SYN sent -> established; close: lifetime; accept: SYN -> accept() */
	__u64 sent;        /* close: payload bytes sent */
	__u64 received;    /* close: payload bytes received */
	__u8 laddr[16];    /* IPv4 in the first 4 bytes */
	__u8 raddr[16];
	__u32 pid;         /* tgid of the process that connected/accepted (0: unknown) */
	__u16 family;      /* AF_INET or AF_INET6 */
	__u16 lport;       /* host byte order */
	__u16 rport;
	__u16 kind;        /* enum net_conn_event_kind */
	__u32 pad;
	char comm[16];
};

/* security, opt-in sensitive probes: TLS plaintext bytes counted at SSL_read/SSL_write return. */
#define TLS_KEYS_MAX 1024 /* (direction, comm) pairs; more go to tls_other */
#define TLS_READ 0
#define TLS_WRITE 1
#define TLS_EX 2          /* attach cookie bit: SSL_read_ex/SSL_write_ex (length via size_t *) */

struct tls_bytes_key {
	__u32 dir; /* TLS_READ or TLS_WRITE */
	__u32 pad;
	char comm[SIDECAR_COMM_LEN];
};

_Static_assert(sizeof(struct tls_bytes_key) == 24, "mirrored in Rust");

/* runtimes (2): Node.js HTTP requests by method (and, with --http-paths, the request path read
 * from the connection's last read, or node <= 18's url argument), timed from the parsed request
 * head to the first write on the same connection (node <= 18: to the response probe). Paths keep
 * at most RT_PATH_LEN bytes; the digits a path segment starts with become '0' (ids share a key,
 * "v1" stays "v1"). */
#define RT_PATH_LEN 64

struct rt_http_key {
	__u32 method; /* llhttp method number */
	__u32 client; /* 0: a request the target served; 1: one it sent (node <= 18 USDT) */
	char path[RT_PATH_LEN];
};

/* A declared (YAML --config) histogram of an argument's value: label, value from the spec's
 * label_arg / value argument. */

#endif
