# syntax=docker/dockerfile:1
#
# Multi-stage build of the SBCFTP tracker.
#   docker build -t sbcftp-tracker .
# The final image holds the binary, CA certificates and curl (for the
# healthcheck) on Debian slim, and runs as an unprivileged user.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Manifests first, so the dependency layer is cached while only sources change.
COPY Cargo.toml Cargo.lock ./
COPY api/Cargo.toml api/Cargo.toml
COPY tracker/Cargo.toml tracker/Cargo.toml
COPY peer/Cargo.toml peer/Cargo.toml
RUN mkdir -p api/src tracker/src peer/src \
    && touch api/src/lib.rs \
    && echo 'fn main() {}' > tracker/src/main.rs && touch tracker/src/lib.rs \
    && echo 'fn main() {}' > peer/src/main.rs && touch peer/src/lib.rs \
    && cargo fetch --locked
COPY api api
COPY tracker tracker
COPY peer peer
COPY migrations migrations
COPY openapi openapi
RUN --mount=type=cache,target=/src/target,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --release --locked -p sbcftp-tracker \
    && install -D -m 0755 target/release/sbcftp-tracker /out/sbcftp-tracker

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 sbcftp \
    && useradd --system --uid 10001 --gid sbcftp --home-dir /var/lib/sbcftp --create-home sbcftp
COPY --from=build /out/sbcftp-tracker /usr/local/bin/sbcftp-tracker
USER sbcftp:sbcftp
WORKDIR /var/lib/sbcftp
ENV SBCFTP_LISTEN=0.0.0.0:8080 \
    SBCFTP_DATABASE_URL=sqlite:///var/lib/sbcftp/sbcftp-tracker.db?mode=rwc \
    RUST_LOG=info
EXPOSE 8080
VOLUME ["/var/lib/sbcftp"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/sbcftp-tracker"]
