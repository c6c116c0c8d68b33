#!/bin/bash
# Makes ebpf-sidecar-node-base:local, a stand-in for the official node image when there is no
# registry: debian:bookworm-slim (scripts/images.sh) plus this host's /usr/bin/node and the
# shared libraries it needs that the slim image lacks. The host must run Debian bookworm's glibc
# (or older) so the copied binary links against the image's libc. Pass --force to remake it.
set -euo pipefail
IMAGE=ebpf-sidecar-node-base:local
[ "${1:-}" != "--force" ] && docker image inspect "$IMAGE" >/dev/null 2>&1 && exit 0
NODE=$(command -v node || true)
[ -n "$NODE" ] || { echo "node-image: no node on this host (apt-get install nodejs)" >&2; exit 1; }
"$(dirname "$0")/images.sh"
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/lib"
cp "$(readlink -f "$NODE")" "$ctx/node"
# libc, libm, libdl, libpthread and the loader come with the base image; copy the rest.
ldd "$NODE" | awk '/=> \//{print $3}' | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|ld-linux*) ;;
    *) cp -L "$lib" "$ctx/lib/" ;;
  esac
done
cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM debian:bookworm-slim
COPY lib/ /usr/local/lib/node-libs/
COPY node /usr/bin/node
RUN echo /usr/local/lib/node-libs > /etc/ld.so.conf.d/node.conf && ldconfig && node --version
DOCKERFILE
docker build -q -t "$IMAGE" "$ctx" >/dev/null
echo "node-image: made $IMAGE" >&2
