#!/bin/bash
# Demo on this machine: a small app container and the sidecar image beside it
# (--pid=container:app), metrics on http://localhost:9435/. `scripts/demo.sh stop` removes them.
set -euo pipefail
cd "$(dirname "$0")/.."
APP=ebpf-sidecar-demo-app
SIDECAR=ebpf-sidecar-demo
PORT=${PORT:-9435}
if [ "${1:-}" = stop ]; then
  docker rm -f "$SIDECAR" "$APP" >/dev/null 2>&1 || true
  exit 0
fi
scripts/setup.sh
scripts/images.sh
docker build -q --build-arg BUILDER=ebpf-sidecar-builder:local -t ebpf-sidecar . >/dev/null
docker rm -f "$SIDECAR" "$APP" >/dev/null 2>&1 || true
# The app: a shell that every second lists a missing directory (ENOENT), reads a file and forks.
docker run -d --name "$APP" debian:bookworm-slim sh -c \
  'while true; do ls /nonexistent 2>/dev/null; cat /etc/hostname >/dev/null; sleep 1; done' >/dev/null
# Docker 20.10 knows no CAP_BPF/CAP_PERFMON: SYS_ADMIN stands in. Docker >= 23: --cap-add BPF --cap-add PERFMON.
docker run -d --name "$SIDECAR" --pid="container:$APP" --cap-add SYS_ADMIN -p "$PORT:9435" ebpf-sidecar >/dev/null
for _ in $(seq 50); do curl -sf "localhost:$PORT/healthz" >/dev/null && break; sleep 0.2; done
sleep 3
echo "ebpf-sidecar is watching container $APP: http://localhost:$PORT/ (metrics at /metrics)"
curl -s "localhost:$PORT/metrics" | grep -E '^ebpf_sidecar_(target_up|process_execs_total|syscall_errors_total|syscalls_total\{syscall="(read|openat|wait4)"\})' || true
echo "stop with: scripts/demo.sh stop"
