#!/bin/bash
# Prepares a Debian bookworm machine (as root) to build, run and test ebpf-sidecar: packages,
# Rust, kernel filesystems, dockerd. Safe to run again; does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "setup: run as root (the probes load BPF programs)" >&2; exit 2; }

# Build: clang + libbpf headers (C probes), gcc (static test workloads).
# Tests and benchmarks: docker.io + debootstrap (images without a registry), prometheus (promtool
# and the server), bpftrace/bpftool (peers and cross-checks), wrk/hyperfine, iproute2, util-linux;
# docker-compose (compose validation), chromium (live page), python3.11/OpenJDK/node and
# systemtap-sdt-dev (runtime packs and the USDT fixture), openssl (TLS test), tshark (reads the
# net family's /debug/pcap captures back); the real software the tests run as targets
# (tests/integration/tests/real_software/): nginx (+ its echo module: http_framing.rs), redis
# and its benchmark, PostgreSQL 15 with pgbench, fio, stress-ng, dnsmasq and dig; ethtool (the GSO
# test's loopback without offloads); xz-utils (unpacks shared/node18-dtrace); MariaDB server and
# client (the protocol recognition tests' MySQL-protocol server, tests/integration/tests/protocols/).
PACKAGES="clang-19 llvm-19 libbpf-dev linux-libc-dev gcc libc6-dev make pkg-config bpftool bpftrace
  docker.io debootstrap prometheus wrk hyperfine iproute2 util-linux procps curl ca-certificates
  openssl docker-compose python3 python3.11 graphviz chromium systemtap-sdt-dev
  openjdk-17-jdk-headless nodejs tshark
  nginx-light libnginx-mod-http-echo redis-server redis-tools postgresql-15 fio stress-ng
  dnsmasq-base dnsutils ethtool xz-utils mariadb-server mariadb-client"
missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing$missing" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# kubernetes-validate (PyPI; bundles Kubernetes' schemas, checks offline): the deployment manifests'
# schema test (tests/integration/tests/stack/files.rs). Debian's own Python is externally managed,
# hence PIP_BREAK_SYSTEM_PACKAGES (pip installs into /usr/local).
if ! kubernetes-validate --version >/dev/null 2>&1; then
  echo "setup: installing kubernetes-validate" >&2
  if ! command -v pip3 >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  PIP_BREAK_SYSTEM_PACKAGES=1 pip3 install -q kubernetes-validate==1.37.0
fi

# mysql-connector-python (PyPI, pinned): the protocol tests' prepared-statement client
# (COM_STMT_PREPARE/COM_STMT_EXECUTE, tests/integration/tests/protocols/mysql.rs): bookworm has no
# python3-mysql.connector package.
if ! python3 -c 'import mysql.connector' >/dev/null 2>&1; then
  echo "setup: installing mysql-connector-python" >&2
  if ! command -v pip3 >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  PIP_BREAK_SYSTEM_PACKAGES=1 pip3 install -q mysql-connector-python==8.4.0
fi

# Rust: the toolchain in rust-toolchain terms is 1.95 (aya 0.14); rustup when cargo is absent.
if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95.0
  export PATH="$HOME/.cargo/bin:$PATH"
fi

# Kernel filesystems: tracefs for bpftrace's tracepoints, bpffs for pinning.
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true

# dockerd, unless one already answers.
if ! docker info >/dev/null 2>&1; then
  echo "setup: starting dockerd" >&2
  nohup dockerd >/var/log/ebpf-sidecar-dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -20 /var/log/ebpf-sidecar-dockerd.log >&2; exit 1; }
fi
