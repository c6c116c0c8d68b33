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

#endif

/* net (packets by cgroup_skb, TCP lifecycle, socket errors) */
#define NET_DIRS 2     /* 0 ingress, 1 egress */
#define NET_FAMILIES 3 /* 0 ipv4, 1 ipv6, 2 other */
#define NET_PROTOS 5   /* 0 tcp, 1 udp, 2 icmp, 3 icmpv6, 4 other */
#define NET_PKT_SLOTS (NET_DIRS * NET_FAMILIES * NET_PROTOS)
/* Peers kept in the kernel; closes from further peers add to NET_OTHER_SENT/RECEIVED. */
#define NET_PEERS_MAX 1024
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
	NET_COUNTERS = 16,
};

/* net: HTTP/1.x request and status lines seen in read/write/recvfrom/sendto payloads */
#define NET_HTTP_METHODS 8 /* GET POST PUT DELETE HEAD PATCH OPTIONS, 7 unused */
#define NET_HTTP_DIRS 2    /* 0 server (request read), 1 client (request written) */

struct net_http_key {
	__u32 dir;
	__u32 method;
	__u32 status; /* 100..599 */
	__u32 pad;
};
