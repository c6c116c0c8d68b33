#!/bin/bash
# Makes the local images the Dockerfile and the tests build FROM, without any registry:
#   debian:bookworm-slim          minimal Debian (debootstrap --variant=minbase + docker import)
#   ebpf-sidecar-builder:local    the same plus clang, libbpf-dev, gcc and this machine's Rust
#                                 toolchain and crate cache (used as the Dockerfile's build stage)
# Each image is made once; pass --force to remake them.
set -euo pipefail
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=${IMAGES_WORKDIR:-/var/tmp/ebpf-sidecar-images}
FORCE=${1:-}

have() { [ "$FORCE" != "--force" ] && docker image inspect "$1" >/dev/null 2>&1; }
log() { echo "images: $*" >&2; }

mkdir -p "$WORK"
if ! have debian:bookworm-slim; then
  log "debootstrap minbase bookworm"
  rm -rf "$WORK/slim"
  debootstrap --variant=minbase bookworm "$WORK/slim" "$MIRROR" >"$WORK/slim.log" 2>&1 \
    || { tail -20 "$WORK/slim.log"; exit 1; }
  rm -rf "$WORK/slim/var/cache/apt/archives/"*.deb "$WORK/slim/var/lib/apt/lists/"*
  tar -C "$WORK/slim" -c . | docker import - debian:bookworm-slim >/dev/null
  log "made debian:bookworm-slim"
fi

if ! have ebpf-sidecar-builder-base:local; then
  log "debootstrap builder (clang-19, libbpf-dev, gcc)"
  rm -rf "$WORK/builder"
  debootstrap --variant=minbase --include=clang-19,libbpf-dev,gcc,libc6-dev,ca-certificates \
    bookworm "$WORK/builder" "$MIRROR" >"$WORK/builder.log" 2>&1 || { tail -20 "$WORK/builder.log"; exit 1; }
  rm -rf "$WORK/builder/var/cache/apt/archives/"*.deb
  # The toolchain this machine builds with, without docs.
  tc=$(rustc --print sysroot)
  mkdir -p "$WORK/builder/opt/rust" "$WORK/builder/opt/cargo"
  cp -a "$tc/bin" "$tc/lib" "$WORK/builder/opt/rust/"
  tar -C "$WORK/builder" -c . | docker import \
    --change 'ENV PATH=/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/opt/cargo' --change 'ENV CARGO_NET_OFFLINE=true' \
    - ebpf-sidecar-builder-base:local >/dev/null
  log "made ebpf-sidecar-builder-base:local"
fi

# The crates Cargo.lock names, as a layer on the base; remade when Cargo.lock changes.
lock=$(sha256sum "$(dirname "$0")/../Cargo.lock" | cut -c1-16)
current=$(docker image inspect -f '{{ index .Config.Labels "lock" }}' ebpf-sidecar-builder:local 2>/dev/null || true)
if [ "$FORCE" = "--force" ] || [ "$current" != "$lock" ]; then
  log "crate cache for Cargo.lock $lock"
  mkdir -p "$WORK/crates/cargo"
  ( cd "$(dirname "$0")/.." && CARGO_HOME="$WORK/crates/cargo" cargo fetch --locked >/dev/null )
  printf 'FROM ebpf-sidecar-builder-base:local\nCOPY cargo /opt/cargo\nLABEL lock=%s\n' "$lock" >"$WORK/crates/Dockerfile"
  docker build -q -t ebpf-sidecar-builder:local "$WORK/crates" >/dev/null
  log "made ebpf-sidecar-builder:local"
fi
