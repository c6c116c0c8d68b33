#!/bin/bash
# Prints the syscalls the container runtime's init (runc:[2:INIT]) makes after it installed the
# container's seccomp filter and before it exec's the app: the floor of any working profile
# (sidecar/src/seccomp.rs RUNTIME_BASELINE). Needs bpftrace, tracefs and dockerd.
set -euo pipefail
cd "$(dirname "$0")"
out=$(mktemp)
timeout 15 bpftrace runc-after-seccomp.bt >"$out" 2>/dev/null &
sleep 4
docker run --rm debian:bookworm-slim true
wait || true
python3 - "$out" <<'PY'
import re, sys
lines = [l.split() for l in open(sys.argv[1]) if re.match(r'^\d+ \d+ -?\d+$', l.strip())]
last = max(i for i, (t, n, a) in enumerate(lines) if (n, a) in (('317', '1'), ('157', '22')))
print(sorted({int(n) for t, n, a in lines[last + 1:]}))
PY
