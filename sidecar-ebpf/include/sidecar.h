/* Structs shared by the kernel programs and userspace (mirrored in sidecar-ebpf/src/lib.rs, whose
 * compile-time asserts pin every size and offset). Fixed-width fields, explicit padding: the Rust
 * side reads these as plain bytes. */
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
};

struct sidecar_target {
	__u64 cgroup_id;
	__u64 pidns_dev;
	__u64 pidns_ino;
	__u32 mode;
	__u32 self_tgid; /* the sidecar's own tgid as seen in that pid namespace (PIDNS mode) */
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
	SYSCALLS_COUNTERS = 4,
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

enum runtimes_counter {
	RT_LOST_KEYS = 0,      /* label keys that did not fit their map */
	RT_LOST_BEGINS = 1,    /* begin/end pairs that could not be tracked (in-flight table full) */
	RT_UNMATCHED_ENDS = 2, /* end seen without its begin (attached mid-pair) */
	RT_BAD_SPECS = 3,      /* a site fired without a spec or with an unreadable argument */
	RT_COUNTERS = 4,
};

#endif
