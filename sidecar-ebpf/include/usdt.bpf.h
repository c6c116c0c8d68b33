/* USDT argument readers for aya-loaded programs: the spec of each probe site lives in
 * `usdt_specs`, keyed by the attach cookie userspace gave that site. Same idea as libbpf's
 * usdt.bpf.h, without its .kconfig externs and global functions (which aya cannot load). */
#ifndef USDT_BPF_H
#define USDT_BPF_H

#include "sidecar.bpf.h"

#define USDT_SPECS_MAX 1024

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, USDT_SPECS_MAX);
	__type(key, __u32);
	__type(value, struct usdt_spec);
} usdt_specs SEC(".maps");

static __always_inline struct usdt_spec *usdt_spec_of(void *ctx)
{
	__u32 id = (__u32)bpf_get_attach_cookie(ctx);

	return bpf_map_lookup_elem(&usdt_specs, &id);
}

static __always_inline __u64 usdt_reg(void *ctx, __u16 off)
{
	__u64 v = 0;

	/* pt_regs offsets come from userspace, so a variable offset: read it as memory. */
	if (off > sizeof(struct pt_regs) - sizeof(__u64))
		return 0;
	bpf_probe_read_kernel(&v, sizeof(v), (char *)ctx + off);
	return v;
}

/* Read argument `i` of the firing site; 0 on success. */
static __always_inline int usdt_arg(void *ctx, struct usdt_spec *spec, __u32 i, __s64 *out)
{
	struct usdt_arg *a;
	__u64 v = 0, addr;

	if (i >= USDT_MAX_ARGS || i >= spec->arg_cnt)
		return -1;
	a = &spec->args[i];
	switch (a->kind) {
	case USDT_ARG_CONST:
		v = a->val_off;
		break;
	case USDT_ARG_REG:
		v = usdt_reg(ctx, a->reg_off);
		break;
	case USDT_ARG_REG_DEREF:
		addr = usdt_reg(ctx, a->reg_off) + a->val_off;
		if (bpf_probe_read_user(&v, sizeof(v), (void *)addr))
			return -1;
		break;
	case USDT_ARG_SIB:
		addr = usdt_reg(ctx, a->reg_off) + (usdt_reg(ctx, a->idx_reg_off) << (a->scale_shift & 3)) +
		       a->val_off;
		if (bpf_probe_read_user(&v, sizeof(v), (void *)addr))
			return -1;
		break;
	default:
		return -1;
	}
	/* Little endian: the argument is in the low bytes; shift the rest out, keeping the sign. */
	v <<= (a->bitshift & 63);
	if (a->is_signed)
		*out = ((__s64)v) >> (a->bitshift & 63);
	else
		*out = (__s64)(v >> (a->bitshift & 63));
	return 0;
}

#endif
