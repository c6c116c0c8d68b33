// SPDX-License-Identifier: GPL-2.0
/* Not a probe, never loaded. The programs only reserve these structs in ring buffers, through
 * inlined helpers: no map or function signature names them, so clang emits no BTF for them in
 * the family objects. One global of each puts them in this object's BTF, compiled from the same
 * headers with the same flags, for the mirror test (sidecar/tests/mirrors.rs). List here only a
 * struct that no family object's BTF has, with the object that uses it. */
#include "sidecar.bpf.h"

struct security_event record_security_event; /* security.bpf.c: security_events */
struct net_conn_event record_net_conn_event; /* net.bpf.c (net_pkt.bpf.h): net_events */
/* Keys and values of per-slot maps (SIDECAR_SLOT_MAP): an inner definition gives their sizes
 * only (SIDECAR_INNER_KV). */
struct exit_key record_exit_key;                   /* process.bpf.c: process_exits */
struct comm_key record_comm_key;                   /* process.bpf.c, cpu.bpf.c: process_execs, cpu_comm_ns */
struct syscall_error_key record_syscall_error_key; /* syscalls.bpf.c: syscall_errors, syscall_denied */
struct cpu_hist_val record_cpu_hist_val;           /* cpu.bpf.c: cpu_hists */
struct profile_key record_profile_key;             /* profile.bpf.c: profile_counts */
struct profile_cfg record_profile_cfg;             /* profile.bpf.c: profile_config */
struct security_config record_security_config;     /* security.bpf.c: security_config */
struct sec_prefix record_sec_prefix;               /* security.bpf.c: sensitive_prefixes */
struct tls_bytes_key record_tls_bytes_key;         /* security.bpf.c: tls_bytes */
struct net_pkt_stats record_net_pkt_stats;         /* net.bpf.c: net_packets */
struct net_peer_key record_net_peer_key;           /* net.bpf.c: net_peers */
struct net_peer_stats record_net_peer_stats;       /* net.bpf.c: net_peers */
struct net_error_key record_net_error_key;         /* net.bpf.c: net_errors */
struct net_http_key record_net_http_key;           /* net.bpf.c: net_http_requests */
struct net_http_path_key record_net_http_path_key; /* net.bpf.c: net_http_paths */
struct net_proto_key record_net_proto_key;         /* net.bpf.c: net_proto_counts */
struct net_tls_key record_net_tls_key;             /* net.bpf.c (net_tls.bpf.h): net_tls_conns */
struct net_pcap_cfg record_net_pcap_cfg;           /* net.bpf.c: net_pcap_cfg */
struct file_io record_file_io;                     /* files.bpf.c: file_io, file_kind_io */
struct file_sync_stats record_file_sync_stats;     /* files.bpf.c: file_syncs */
struct rt_key record_rt_key;                       /* runtimes.bpf.c: rt_counts, rt_hists */
struct rt_hist record_rt_hist;                     /* runtimes.bpf.c: rt_hists, rt_http_hists */
struct rt_config record_rt_config;                 /* runtimes.bpf.c: rt_config */
