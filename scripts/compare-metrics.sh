#!/bin/bash
# Same workload, two sidecar builds: do they write the same /metrics? (issue #17's rule: a
# refactor changes no metric name, HELP, TYPE, label set, nor any exact count.)
#
#   scripts/compare-metrics.sh OLD_BINARY NEW_BINARY
#
# Each build runs `run -- <workload>` with every family but profile's sampler timing-free parts:
# `counted run 5000 37 11 42` (5,000 getppid, 37 failing openat, 11 fork+exec of /bin/true),
# a Python interpreter doing 3 collections, a file written and fsync'd, and one HTTP request
# to a local server. Compared: the HELP and TYPE lines (all), the (name, labels) series (all,
# except labels that name a device or a peer's ephemeral port), and the values of the series
# that are exact by design (process, syscall errors, security events, getppid calls).
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?old binary}
new=${2:?new binary}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
workloads=tests/integration/workloads
[ -d "$workloads" ] || workloads=workloads
cc -O2 -static -o "$work/counted" "$workloads/counted.c"
/usr/bin/python3 -m http.server --bind 127.0.0.1 18734 --directory "$work" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
sleep 0.5
cat > "$work/workload.sh" <<SH
"$work/counted" run 5000 37 11 42 || true
/usr/bin/python3 -c 'import gc; [gc.collect() for _ in range(3)]'
dd if=/dev/zero of="$work/file" bs=4096 count=16 conv=fsync status=none
curl -s -o /dev/null http://127.0.0.1:18734/
SH
probes=process,syscalls,security,net,disk,files,cpu,runtimes
for which in old new; do
  bin=$old; [ $which = new ] && bin=$new
  "$bin" run --probes "$probes" --listen 127.0.0.1:0 --metrics-out "$work/$which.prom" \
    -- sh "$work/workload.sh" 2>"$work/$which.log" || true
  [ -s "$work/$which.prom" ] || { echo "$which: no metrics written"; cat "$work/$which.log"; exit 1; }
done
python3 - "$work/old.prom" "$work/new.prom" <<'PY'
import re, sys
def parse(path):
    meta, series = set(), {}
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("# HELP") or line.startswith("# TYPE"):
            meta.add(line)
        elif line and not line.startswith("#"):
            m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$', line)
            if m:
                series[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return meta, series
old_meta, old = parse(sys.argv[1])
new_meta, new = parse(sys.argv[2])
bad = 0
for l in sorted(old_meta ^ new_meta):
    print(("only old: " if l in old_meta else "only new: ") + l); bad += 1
# Series whose presence depends on the machine rather than the workload: build info, program
# statistics, and labels naming devices or ephemeral ports.
volatile = re.compile(r'ebpf_sidecar_(build_info|target_info|bpf_program)|device=|port="[0-9]{5}"|peer=|_bucket|comm="ebpf-sidecar"')
for k in sorted(set(old) ^ set(new)):
    if volatile.search(k[0] + k[1]):
        continue
    print(("series only old: " if k in old else "series only new: ") + k[0] + k[1]); bad += 1
exact = re.compile(r'ebpf_sidecar_(process_(execs|exits|forks)_total|syscall_errors_total|security_events_total|syscalls_total\{syscall="getppid"\})')
checked = 0
for k in sorted(set(old) & set(new)):
    if exact.match(k[0] + k[1]) or exact.match(k[0]):
        checked += 1
        if old[k] != new[k]:
            print(f"value differs: {k[0]}{k[1]} old {old[k]} new {new[k]}"); bad += 1
print(f"{len(old_meta)//2} metric families, {len(old)} series old / {len(new)} new, {checked} exact values compared, {bad} differences")
sys.exit(1 if bad else 0)
PY
