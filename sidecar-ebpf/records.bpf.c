// SPDX-License-Identifier: GPL-2.0
/* Not a probe, never loaded. The programs only reserve these structs in ring buffers, through
 * inlined helpers: no map or function signature names them, so clang emits no BTF for them in
 * the family objects. One global of each puts them in this object's BTF, compiled from the same
 * headers with the same flags, for the mirror test (sidecar/tests/mirrors.rs). List here only a
 * struct that no family object's BTF has, with the object that uses it. */
#include "sidecar.bpf.h"

struct security_event record_security_event; /* security.bpf.c: security_events */
struct net_conn_event record_net_conn_event; /* net.bpf.c (net_pkt.bpf.h): net_events */
/* Per-target maps (SIDECAR_SLOT_MAP) give only their key and value sizes: no BTF either. */
struct exit_key record_exit_key;                 /* process.bpf.c: process_exits */
struct file_io record_file_io;                   /* files.bpf.c: file_io, file_kind_io */
struct file_sync_stats record_file_sync_stats;   /* files.bpf.c: file_syncs */
struct rt_key record_rt_key;                     /* runtimes.bpf.c: rt_counts, rt_hists */
struct rt_hist record_rt_hist;                   /* runtimes.bpf.c: rt_hists, rt_http_hists */
struct rt_config record_rt_config;               /* runtimes.bpf.c: rt_config */
