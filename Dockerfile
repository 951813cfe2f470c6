# Tessera: one binary, `tessera`, for both the operator and the storage node.
#
# Base images are build arguments so the same file works with a registry
# (plain `docker build .`) and without one: e2e/image.sh builds it with buildah
# from locally debootstrapped images, mounts the host's Rust toolchain at
# /usr/local/rust, the cargo home it fetched the locked dependencies into and a
# target cache, and builds offline (CARGO_NET_OFFLINE=true): the build reaches
# no network, so it needs no trust settings of its own.
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
# Cargo reads this from the environment; `false` keeps plain `docker build .`
# fetching from the registry as usual.
ARG CARGO_NET_OFFLINE=false
# The official rust image's layout. /usr/local/rust/bin (a toolchain mounted by
# e2e/image.sh) comes first and is simply absent in the official image.
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /build
COPY . .
RUN cargo build --release --locked --bin tessera \
 && install -D -m 0755 target/release/tessera /out/tessera

FROM ${RUNTIME_IMAGE}
# Non-root runtime user; written directly so no passwd tools are needed.
RUN echo 'tessera:x:10001:10001:tessera:/data:/usr/sbin/nologin' >>/etc/passwd \
 && echo 'tessera:x:10001:' >>/etc/group \
 && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /out/tessera /usr/local/bin/tessera
USER 10001:10001
WORKDIR /data
EXPOSE 6379 6380 9121
ENTRYPOINT ["tessera"]
