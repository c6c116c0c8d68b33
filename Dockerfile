# ebpf-sidecar image: build stage compiles the C probes (clang) and the Rust binary; the runtime
# stage is Debian slim with the one binary.
#
#   docker build -t ebpf-sidecar .                       # with registry access (official rust image)
#   docker build --build-arg BUILDER=ebpf-sidecar-builder:local -t ebpf-sidecar .   # offline, see scripts/images.sh
ARG BUILDER=rust:1.95-slim-bookworm
ARG RUNTIME=debian:bookworm-slim

FROM ${BUILDER} AS build
# The official rust image lacks clang and libbpf headers; the local builder image has them.
RUN if ! command -v clang-19 >/dev/null && ! command -v clang >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends clang libbpf-dev && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# Dependencies first, against stub sources, so a source change rebuilds only the workspace crates
# (Docker keeps this layer while Cargo.toml/Cargo.lock stay the same).
COPY sidecar/Cargo.toml sidecar/
COPY sidecar-ebpf/Cargo.toml sidecar-ebpf/
COPY tests/integration/Cargo.toml tests/integration/
COPY bench/Cargo.toml bench/
RUN for d in sidecar sidecar-ebpf tests/integration bench; do mkdir -p $d/src && : > $d/src/lib.rs; done \
 && for f in sidecar/src/main.rs bench/src/main.rs sidecar-ebpf/build.rs bench/build.rs; do echo 'fn main() {}' > $f; done \
 && cargo build --release --locked -p sidecar \
 && rm -rf sidecar/src sidecar-ebpf/src bench/src tests/integration/src sidecar-ebpf/build.rs bench/build.rs
COPY sidecar ./sidecar
COPY sidecar-ebpf ./sidecar-ebpf
# Workspace members' manifests must be present for cargo to read the workspace.
COPY tests ./tests
COPY bench ./bench
# The stubs' outputs are newer than the sources' copied mtimes: make the sources newer.
RUN find sidecar sidecar-ebpf tests bench -type f -exec touch {} + \
 && cargo build --release --locked -p sidecar && install -m 0755 target/release/ebpf-sidecar /ebpf-sidecar

FROM ${RUNTIME}
COPY --from=build /ebpf-sidecar /usr/local/bin/ebpf-sidecar
EXPOSE 9435
# Needs (Docker >= 23): --cap-add BPF --cap-add PERFMON [--cap-add SYS_ADMIN for --bpf-stats];
# Docker 20.10: --cap-add SYS_ADMIN. Start with --pid=container:<app>.
ENTRYPOINT ["ebpf-sidecar"]
