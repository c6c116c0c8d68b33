#!/bin/bash
# Per-packet cost of the net family's cgroup_skb programs, measured with BPF_PROG_TEST_RUN
# (bpftool prog run, millions of runs of one packet): no scheduler or CPU-sharing noise, so two
# versions of net.bpf.c compare exactly. Usage: bench/net_pkt_cost.sh [GIT_REV_TO_COMPARE]
# (default: e4ada30, the packet path before DNS/pcap/direct packet access). Needs root, clang-19,
# bpftool, bpffs, cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:-e4ada30}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; rm -rf /sys/fs/bpf/net_pkt_cost_$$_*' EXIT
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
git show "$rev:sidecar-ebpf/bpf/net.bpf.c" >"$tmp/base.bpf.c"
cp sidecar-ebpf/bpf/net.bpf.c "$tmp/this.bpf.c"
# Compiled with the probes' own clang recipe (sidecar-ebpf/clang.rs), through the bench binary.
cargo build --release -q -p bench
for v in base this; do
  target/release/bench bpf-cc "$tmp/$v.bpf.c" "$tmp/$v.o"
  bpftool prog loadall "$tmp/$v.o" "/sys/fs/bpf/net_pkt_cost_$$_$v"
done
python3 - "$tmp" <<'PY'
import struct, sys
d = sys.argv[1]
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return (~s) & 0xffff
def pkt(proto, sport, dport, payload):
    if proto == 6:
        l4 = struct.pack('!HHIIBBHHH', sport, dport, 1, 0, 5 << 4, 0x18, 65535, 0, 0) + payload
    else:
        l4 = struct.pack('!HHHH', sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0,
                     bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
    return b'\0' * 12 + b'\x08\x00' + ip + l4  # test runs take an Ethernet frame
open(d + '/tcp.bin', 'wb').write(pkt(6, 40000, 443, b'x' * 1400))
open(d + '/udp.bin', 'wb').write(pkt(17, 40000, 8125, b'x' * 200))
q = struct.pack('!HHHHHH', 0x1234, 0x0100, 1, 0, 0, 0) + b'\x01a\x04test\x00' + struct.pack('!HH', 1, 1)
open(d + '/dns.bin', 'wb').write(pkt(17, 40001, 53, q))
PY
echo "| packet | program | $rev ns/run | this tree ns/run |"
echo "|---|---|---:|---:|"
for p in tcp udp dns; do
  for prog in net_ingress net_egress; do
    row="| $p | $prog"
    for v in base this; do
      ns=$(bpftool prog run pinned "/sys/fs/bpf/net_pkt_cost_$$_$v/$prog" data_in "$tmp/$p.bin" \
        repeat 5000000 2>&1 | sed -n 's/.*average): \([0-9]*\)ns.*/\1/p')
      row="$row | $ns"
    done
    echo "$row |"
  done
done
