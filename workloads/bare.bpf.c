// SPDX-License-Identifier: GPL-2.0
/* The floor: raw_tp programs that return at once. What bpf_stats reports for them is the cost of
 * the hook plus the measurement itself on this machine. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("raw_tp/sys_enter")
int bare_enter(unsigned long long *ctx)
{
	return 0;
}

SEC("raw_tp/sys_exit")
int bare_exit(unsigned long long *ctx)
{
	return 0;
}
