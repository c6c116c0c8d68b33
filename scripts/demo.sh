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
# The app: a shell that every second lists a missing directory (ENOENT), reads a file, forks, and
# makes one HTTP/1.0 request over TCP to a listener inside the same container on loopback
# (perl-base is in every Debian image): the network family has packets, connections and HTTP
# to show. Nothing leaves the container.
APP_SCRIPT=$(cat <<'SCRIPT'
perl -MIO::Socket::INET -e '
  my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1:8080", Listen => 16, ReuseAddr => 1) or die "listen: $!";
  while (my $c = $s->accept) { sysread($c, my $req, 4096); print $c "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n"; close $c }' &
while true; do
  ls /nonexistent 2>/dev/null
  cat /etc/hostname >/dev/null
  perl -MIO::Socket::INET -e '
    my $c = IO::Socket::INET->new("127.0.0.1:8080") or exit 1;
    print $c "GET /demo HTTP/1.0\r\nHost: app\r\n\r\n"; 1 while sysread($c, my $b, 4096)'
  sleep 1
done
SCRIPT
)
docker run -d --name "$APP" debian:bookworm-slim sh -c "$APP_SCRIPT" >/dev/null
# Docker 20.10 knows no CAP_BPF/CAP_PERFMON: SYS_ADMIN stands in. Docker >= 23: --cap-add BPF --cap-add PERFMON.
# NET_ADMIN: the network family's cgroup_skb packet counters (without it: probe_up{probe="net"} 0).
# --bpf-stats (needs SYS_ADMIN): the page's probe-cost chart.
docker run -d --name "$SIDECAR" --pid="container:$APP" -v /sys/fs/bpf:/sys/fs/bpf --cap-add SYS_ADMIN --cap-add NET_ADMIN \
  -p "$PORT:9435" ebpf-sidecar --bpf-stats >/dev/null
for _ in $(seq 50); do curl -sf "localhost:$PORT/healthz" >/dev/null && break; sleep 0.2; done
sleep 3
echo "ebpf-sidecar is watching container $APP: http://localhost:$PORT/ (metrics at /metrics)"
curl -s "localhost:$PORT/metrics" | grep -E '^ebpf_sidecar_(target_up|probe_up|process_execs_total|syscall_errors_total|syscalls_total\{syscall="(read|openat|wait4|connect)"\}|network_packets_total|tcp_connections_total|http_requests_total)' || true
echo "stop with: scripts/demo.sh stop"
