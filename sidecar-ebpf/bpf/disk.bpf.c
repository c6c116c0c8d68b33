// SPDX-License-Identifier: GPL-2.0
/* Disk family: block requests, bytes, service time and queue time by (disk, op), for the requests
 * the target itself submitted.
 *
 * Bytes are counted per bio, when the target submits it (block_bio_queue, in the submitter's
 * context, once per bio: a split keeps the traced flag), not per request: the block layer merges
 * bios of different processes into one request (adjacent sectors of two files written at the same
 * time), and a request has one owner. Counted per request, the target's bytes merged into another
 * process's request were lost, and that process's bytes merged into ours were counted as ours.
 *
 * Attribution: a request is created from a bio in the context of the task that submits it
 * (block_io_start, from blk_account_io_start in blk_mq_bio_to_request). That is the only moment
 * the submitter is current, so the target decision is taken there and remembered by request
 * pointer. Insert, issue and completion run in whatever context the block layer picks (kblockd
 * workers, the completion interrupt) and only look the request up. The bio's blkcg is not used: on
 * a hybrid v1+v2 host it is a v1 blkio cgroup, not the v2 id the target filter knows.
 *
 * Hooks (tp_btf: the arguments are typed, so their fields are plain loads): block_bio_queue (bytes),
 * block_io_start (creation), block_rq_insert (into the scheduler),
 * block_rq_issue (to the driver), block_rq_requeue (back from the driver, issued again later),
 * block_rq_complete (done, possibly partially), block_rq_merge (a request absorbed by another:
 * freed without completing).
 *
 * Completions the tracepoint does not deliver: on the 6.18 test machines, under concurrent direct
 * I/O, about one request in several thousand ends (its bios complete, the struct is freed and
 * reused) without block_rq_complete reaching any BPF program (tp_btf or perf, no recursion miss
 * recorded). Such a request is still counted once we know it has ended: when its
 * request struct is taken again (block_io_start with the same address), or when userspace runs
 * disk_sweep before reading the tables and finds it idle again after its issue. It then has no
 * service time: it is counted as untimed, outside the duration histograms.
 *
 * Shared kernel side: the in-flight table is host-wide (a request belongs to one target); each
 * entry carries the slot found at creation and that slot's epoch (a number its sidecar writes in
 * disk_epoch at load), and is counted in that slot's tables only while the slot still has that
 * epoch: a request outliving its sidecar is not counted for the next sidecar in the slot. Since
 * every sidecar runs disk_sweep over the whole table, whoever deletes an entry counts it (a
 * failed delete means another CPU or sweep got there first). */
#include "sidecar.bpf.h"

char LICENSE[] SEC("license") = "GPL";

struct disk_inflight_req {
	__u64 start_ns;  /* creation */
	__u64 insert_ns; /* into the I/O scheduler, 0 when it went straight to the driver */
	__u64 issue_ns;  /* to the driver, 0 until issued */
	struct disk_io_key key;
	__u64 epoch;     /* of the slot at creation */
	__u32 slot;
	__u32 pad;
};

/* Requests of the targets in flight, by request address. A plain hash (cheaper to update than an
 * LRU): requests come from each queue's fixed, preallocated pool, so an entry whose completion we
 * never saw is overwritten or deleted when its request struct is used again. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct disk_inflight_req);
} disk_inflight SEC(".maps");

/* Per target (slot), see SIDECAR_SLOT_MAP; not preallocated (a slot pays for the devices its
 * target uses, not for 1024 histograms on every CPU). */
struct disk_stats_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	SIDECAR_INNER_KV(struct disk_io_key, struct disk_io_stats);
};
SIDECAR_SLOT_MAP(disk_stats, struct disk_stats_map);

struct disk_counters_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DISK_COUNTERS);
	SIDECAR_INNER_KV(__u32, __u64);
};
SIDECAR_SLOT_MAP(disk_counters, struct disk_counters_map);

/* The slot's epoch: nonzero, written by its sidecar at load, new for every sidecar. */
struct disk_epoch_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	SIDECAR_INNER_KV(__u32, __u64);
};
SIDECAR_SLOT_MAP(disk_epoch, struct disk_epoch_map);

/* Initial value for a new (device, op) key: too big for the stack, and never written. A map,
 * not a `static const`: a .rodata map is frozen once written, so it cannot be pinned on a shared
 * kernel side and written again by the next sidecar's load. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct disk_io_stats);
} disk_zero SEC(".maps");

/* 0: the slot does not count disk I/O (no sidecar, or one without the family). */
static __always_inline __u64 slot_epoch(__u32 slot)
{
	__u32 zero = 0;
	void *m = sidecar_slot_map(&disk_epoch, slot);
	__u64 *e = m ? bpf_map_lookup_elem(m, &zero) : NULL;

	return e ? *e : 0;
}

/* Whether `v` still belongs to the sidecar of its slot that saw it created. */
static __always_inline int still_ours(const struct disk_inflight_req *v)
{
	return v->epoch && slot_epoch(v->slot) == v->epoch;
}

static __always_inline void bump_counter(__u32 slot, __u32 idx)
{
	void *m = sidecar_slot_map(&disk_counters, slot);
	__u64 *c = m ? bpf_map_lookup_elem(m, &idx) : NULL;

	if (c)
		*c += 1;
}

/* `flags`: a request's cmd_flags or a bio's bi_opf (same layout); `len`: its bytes. */
static __always_inline __u32 op_of(__u32 flags, __u32 len)
{
	__u32 op = flags & 0xff; /* REQ_OP_MASK */
	__u32 preflush = 1U << bpf_core_enum_value(enum req_flag_bits, __REQ_PREFLUSH);

	if (op == bpf_core_enum_value(enum req_op, REQ_OP_READ))
		return DISK_OP_READ;
	if (op == bpf_core_enum_value(enum req_op, REQ_OP_WRITE))
		/* fsync's cache flush is an empty write with PREFLUSH set */
		return ((flags & preflush) && !len) ? DISK_OP_FLUSH
									 : DISK_OP_WRITE;
	if (op == bpf_core_enum_value(enum req_op, REQ_OP_FLUSH))
		return DISK_OP_FLUSH;
	if (op == bpf_core_enum_value(enum req_op, REQ_OP_DISCARD) ||
	    op == bpf_core_enum_value(enum req_op, REQ_OP_SECURE_ERASE))
		return DISK_OP_DISCARD;
	return DISK_OP_OTHER;
}

static __always_inline struct disk_io_stats *stats_of(__u32 slot, struct disk_io_key *key)
{
	void *stats = sidecar_slot_map(&disk_stats, slot);
	__u32 zero = 0;
	struct disk_io_stats *st, *fresh;

	if (!stats)
		return NULL;
	st = bpf_map_lookup_elem(stats, key);
	if (st)
		return st;
	fresh = bpf_map_lookup_elem(&disk_zero, &zero);
	if (!fresh)
		return NULL;
	bpf_map_update_elem(stats, key, fresh, BPF_NOEXIST);
	st = bpf_map_lookup_elem(stats, key);
	if (!st)
		bump_counter(slot, DISK_LOST_KEYS);
	return st;
}

/* A request of ours has ended without its completion reaching us (see the header): count it (its
 * bytes were counted at submission). One that was never issued may have been merged into another
 * without our seeing it: only a flush, which cannot be, is counted then. `v` is a copy taken
 * before the entry was deleted (by us: nobody else counts it). */
static __always_inline void end_untraced(struct disk_inflight_req *v)
{
	if (!still_ours(v))
		return;
	if (!v->issue_ns && v->key.op != DISK_OP_FLUSH) {
		bump_counter(v->slot, DISK_LOST_REQUESTS);
		return;
	}

	struct disk_io_key key = v->key;
	struct disk_io_stats *st = stats_of(v->slot, &key);

	if (!st)
		return;
	st->requests++;
	st->untimed++;
}

/* tp_btf args: ctx[0] = struct request * */
SEC("tp_btf/block_io_start")
int disk_io_start(unsigned long long *ctx)
{
	__u64 rq_ptr = ctx[0];
	/* The struct is being taken: a request of ours still filed under it has ended. A lookup,
	 * not a blind delete: it is lock-free and finds nothing for almost every request. */
	struct disk_inflight_req *old = bpf_map_lookup_elem(&disk_inflight, &rq_ptr);

	if (old) {
		struct disk_inflight_req ended = *old;

		if (!bpf_map_delete_elem(&disk_inflight, &rq_ptr))
			end_untraced(&ended);
	}

	int slot = sidecar_slot();

	if (slot < 0)
		return 0;

	__u64 epoch = slot_epoch(slot);

	if (!epoch)
		return 0;

	struct request *rq = (struct request *)rq_ptr;
	struct gendisk *disk = rq->q->disk;
	struct disk_inflight_req v = {
		.start_ns = bpf_ktime_get_ns(),
		.key = {
			.major = disk ? disk->major : 0,
			.minor = disk ? disk->first_minor : 0,
			.op = op_of(rq->cmd_flags, rq->__data_len),
		},
		.epoch = epoch,
		.slot = slot,
	};

	if (bpf_map_update_elem(&disk_inflight, &rq_ptr, &v, BPF_ANY))
		bump_counter(slot, DISK_LOST_REQUESTS);
	return 0;
}

/* tp_btf args: ctx[0] = struct bio * */
SEC("tp_btf/block_bio_queue")
int disk_bio_queue(unsigned long long *ctx)
{
	int slot = sidecar_slot();

	if (slot < 0 || !slot_epoch(slot))
		return 0;

	struct bio *bio = (struct bio *)ctx[0];
	struct gendisk *disk = bio->bi_bdev->bd_disk;

	/* A bio-based device (device mapper, md) has no requests of its own: its bios are counted
	 * on the disks below, where the remapped bios are queued again (by us when it remaps
	 * inline, by its workers otherwise, which are then not the target, as for its requests). */
	if (!disk || !disk->queue->mq_ops)
		return 0;

	__u32 len = bio->bi_iter.bi_size;
	struct disk_io_key key = {
		.major = disk->major,
		.minor = disk->first_minor,
		.op = op_of(bio->bi_opf, len),
	};
	struct disk_io_stats *st = stats_of(slot, &key);

	if (st)
		st->bytes += len;
	return 0;
}

/* Hooks below run in other contexts (workers, interrupts): no current-task filter, the in-flight
 * table is the filter. */

SEC("tp_btf/block_rq_insert")
int disk_rq_insert(unsigned long long *ctx)
{
	__u64 rq_ptr = ctx[0];
	struct disk_inflight_req *v = bpf_map_lookup_elem(&disk_inflight, &rq_ptr);

	if (v && !v->issue_ns)
		v->insert_ns = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/block_rq_issue")
int disk_rq_issue(unsigned long long *ctx)
{
	__u64 rq_ptr = ctx[0];
	struct disk_inflight_req *v = bpf_map_lookup_elem(&disk_inflight, &rq_ptr);

	if (v)
		v->issue_ns = bpf_ktime_get_ns();
	return 0;
}

/* Back from the driver (busy, or a partial completion to redo): it is issued again later, and its
 * service time starts over then. Until then it is not in flight, which disk_sweep must know. */
SEC("tp_btf/block_rq_requeue")
int disk_rq_requeue(unsigned long long *ctx)
{
	__u64 rq_ptr = ctx[0];
	struct disk_inflight_req *v = bpf_map_lookup_elem(&disk_inflight, &rq_ptr);

	if (v)
		v->issue_ns = 0;
	return 0;
}

SEC("tp_btf/block_rq_merge")
int disk_rq_merge(unsigned long long *ctx)
{
	__u64 rq_ptr = ctx[0];

	/* It now completes as part of the request that absorbed it (its bytes were counted when
	 * submitted, whoever's request they end up in). */
	bpf_map_delete_elem(&disk_inflight, &rq_ptr);
	return 0;
}

/* tp_btf args: ctx[0] = struct request *, ctx[1] = blk_status_t, ctx[2] = bytes completed now */
SEC("tp_btf/block_rq_complete")
int disk_rq_complete(unsigned long long *ctx)
{
	__u64 rq_ptr = ctx[0];
	struct disk_inflight_req *v = bpf_map_lookup_elem(&disk_inflight, &rq_ptr);

	if (!v)
		return 0;

	__u64 nr_bytes = (__u32)ctx[2];
	struct request *rq = (struct request *)rq_ptr;

	/* Partial completion: the rest follows on the same request. */
	if (nr_bytes < rq->__data_len)
		return 0;

	__u64 now = bpf_ktime_get_ns();
	/* The flush an fsync asks for is never issued itself: the block layer's own flush request
	 * does the work, and ours completes with it. Its service time is then counted from creation,
	 * with no queue time. */
	__u64 issued = v->issue_ns ? v->issue_ns : v->start_ns;
	__u64 queued = v->issue_ns ? (v->insert_ns ? v->insert_ns : v->start_ns) : issued;
	__u64 req_ns = now > issued ? now - issued : 0;
	__u64 queue_ns = issued > queued ? issued - queued : 0;
	struct disk_io_key key = v->key;
	__u64 epoch = v->epoch;
	__u32 slot = v->slot;

	/* Whoever deletes it counts it (a sweep may have found it idle already). */
	if (bpf_map_delete_elem(&disk_inflight, &rq_ptr))
		return 0;
	if (!epoch || slot_epoch(slot) != epoch)
		return 0;

	struct disk_io_stats *st = stats_of(slot, &key);

	if (!st)
		return 0;
	st->requests++;
	st->request_ns += req_ns;
	st->queue_ns += queue_ns;
	st->request_hist[sidecar_hist_bucket(req_ns)]++;
	st->queue_hist[sidecar_hist_bucket(queue_ns)]++;
	return 0;
}

#define SWEEP_MIN_AGE_NS 1000000ULL

static long sweep_one(struct bpf_map *map, __u64 *rq_ptr, struct disk_inflight_req *v, void *ctx)
{
	struct request *rq = (struct request *)*rq_ptr;
	int state;

	/* In flight between its issue and the end of its completion, idle once freed (and while
	 * requeued, but the requeue hook clears issue_ns). Not issued: creation to issue is short
	 * and the next block_io_start on the struct settles it. */
	if (!v->issue_ns)
		return 0;
	/* The issue tracepoint fires just before the state turns in-flight: leave the newest. */
	if (bpf_ktime_get_ns() - v->issue_ns < SWEEP_MIN_AGE_NS)
		return 0;
	if (bpf_probe_read_kernel(&state, sizeof(state), &rq->state))
		return 0;
	if (state != bpf_core_enum_value(enum mq_rq_state, MQ_RQ_IDLE))
		return 0;

	struct disk_inflight_req ended = *v;

	if (!bpf_map_delete_elem(map, rq_ptr))
		end_untraced(&ended);
	return 0;
}

/* Not attached: userspace runs it (BPF_PROG_TEST_RUN) before it reads disk_stats, so that a
 * request whose completion was not delivered is counted at the next scrape. It goes over the
 * whole host-wide table, every slot's requests (each counted in its own slot's tables): on a
 * shared kernel side each sidecar loads its own copy against the pinned maps. */
SEC("raw_tp")
int disk_sweep(void *ctx)
{
	bpf_for_each_map_elem(&disk_inflight, sweep_one, NULL, 0);
	return 0;
}
