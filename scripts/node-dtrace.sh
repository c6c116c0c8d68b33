#!/bin/bash
# Node.js 18 built --with-dtrace: the `node` USDT provider (http__server__request/response,
# http__client__request/response, gc__start/gc__done, net__server__connection, net__stream__end)
# that Node removed in v19, which the runtimes family reads instead of uprobes on llhttp.
#
#   scripts/node-dtrace.sh build [OUT_DIR]   rebuild it from Debian's source package (about 80 min
#                                            on 2 cores); writes OUT_DIR/node18-dtrace.xz
#                                            (default: ../shared/node18-dtrace beside the repo)
#   scripts/node-dtrace.sh stage             put the binary (unpacked from that .xz, or $NODE18_XZ)
#                                            and the shared libraries it needs into
#                                            examples/node-app/node18/, the build context of
#                                            examples/node-app/Dockerfile.dtrace
#
# `build` runs on a Debian bookworm host (or container) as root: it enables deb-src for bookworm
# and bookworm-security (the security suite carries 18.20.x), downloads the source package with
# `apt-get source --download-only nodejs` and builds Debian's upstream tarball (no Debian patches)
# with the configure line below. Set NODEJS_VERSION (e.g. 18.20.4+dfsg-1~deb12u1) to pin one.
# The result needs bookworm's libbrotli1 and libicu72 at run time.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${NODE18_DIR:-$ROOT/../shared/node18-dtrace}
CONFIGURE=(--with-dtrace --shared-brotli --with-intl=system-icu --without-npm --without-corepack)
log() { echo "node-dtrace: $*" >&2; }

build() {
  local out
  out=$(realpath -m "${1:-$SHARED}")
  [ "$(id -u)" = 0 ] || { log "build: run as root (apt-get)"; exit 1; }
  grep -q bookworm /etc/os-release || log "warning: not Debian bookworm; the binary will need its libbrotli1/libicu72"
  # deb-src for the suites that carry nodejs 18 (bookworm: 18.19, bookworm-security: 18.20).
  local list=/etc/apt/sources.list.d/ebpf-sidecar-deb-src.list
  if ! apt-get indextargets --format '$(TARGET_OF)' 2>/dev/null | grep -q deb-src; then
    cat >"$list" <<'EOF'
deb-src http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian-security bookworm-security main
EOF
    log "enabled deb-src in $list"
  fi
  apt-get update -qq
  # Toolchain, the dtrace script (systemtap-sdt-dev) and the two libraries built against.
  apt-get install -y --no-install-recommends dpkg-dev python3 g++ make pkg-config \
    systemtap-sdt-dev libbrotli-dev libicu-dev xz-utils
  local work
  work=$(mktemp -d /var/tmp/node-dtrace.XXXXXX)
  cd "$work"
  apt-get source --download-only "nodejs${NODEJS_VERSION:+=$NODEJS_VERSION}"
  local orig
  orig=$(ls nodejs_*.orig.tar.* 2>/dev/null | head -1 || true)
  [ -n "$orig" ] || { log "no nodejs_*.orig.tar.* downloaded in $work"; exit 1; }
  log "building $orig in $work (about 80 minutes on 2 cores)"
  mkdir src
  tar -C src --strip-components=1 -xf "$orig"
  cd src
  ./configure "${CONFIGURE[@]}"
  make -j"$(nproc)"
  ./out/Release/node --version
  # The provider must be there: 8 node: probes.
  local n
  n=$(readelf -n out/Release/node | grep -c 'Provider: node' || true)
  [ "$n" -ge 8 ] || { log "out/Release/node has $n node: USDT probes, expected 8"; exit 1; }
  mkdir -p "$out"
  cp out/Release/node "$out/node18-dtrace"
  xz -f -T0 "$out/node18-dtrace"
  log "wrote $out/node18-dtrace.xz ($(./out/Release/node --version)); sources left in $work"
}

stage() {
  local xz=${NODE18_XZ:-$SHARED/node18-dtrace.xz}
  [ -f "$xz" ] || { log "$xz is missing: run scripts/node-dtrace.sh build (or set NODE18_XZ)"; exit 1; }
  local ctx=$ROOT/examples/node-app/node18
  rm -rf "$ctx"
  mkdir -p "$ctx/lib"
  # Unpacked here, never beside the .xz (shared/ may be read-only).
  xz -dk --stdout "$xz" >"$ctx/node"
  chmod 0755 "$ctx/node"
  "$ctx/node" --version | grep -q '^v18\.' || { log "$ctx/node is not Node 18"; exit 1; }
  # libc, libm, libdl, libpthread and the loader come with debian:bookworm-slim; copy the rest
  # (libbrotli*, libicu*72, libstdc++, libgcc_s) as scripts/node-image.sh does for stock node.
  ldd "$ctx/node" | awk '/=> \//{print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|ld-linux*) ;;
      *) cp -L "$lib" "$ctx/lib/" ;;
    esac
  done
  log "staged $("$ctx/node" --version) and $(ls "$ctx/lib" | wc -l) libraries in $ctx"
}

case "${1:-}" in
  build) shift; build "$@" ;;
  stage) stage ;;
  *) sed -n '2,18p' "$0" >&2; exit 2 ;;
esac
