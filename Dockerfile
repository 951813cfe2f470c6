# Tessera: one binary, `tessera`, for both the operator and the storage node.
#
# Base images are build arguments so the same file works with a registry
# (plain `docker build .`) and without one: e2e/image.sh builds it with buildah
# from locally debootstrapped images and mounts the host's Rust toolchain,
# cargo registry and a target cache into the build stage.
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
# The official rust image's layout; e2e/image.sh mounts a toolchain there.
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
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
EXPOSE 6379 9121
ENTRYPOINT ["tessera"]
