# Multi-stage build of the SBCFTP tracker.
#   docker build -t sbcftp-tracker .
# Needs BuildKit (for the RUN cache mounts): Docker Engine 23 and newer use it
# by default; Debian's docker.io 20.10 needs DOCKER_BUILDKIT=1 (README,
# "Deploying the tracker"). No `# syntax=` line: the built-in Dockerfile
# frontend has every feature used here, and the line would pull an image.
#
# The final image holds the stripped binary, CA certificates and curl (for the
# healthcheck) on Debian slim, and runs as an unprivileged user (uid 10001).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# The whole workspace (less .dockerignore), not a skeleton of its manifests:
# every crate, example and bench that a manifest declares is then present, and
# nothing here has to change when one is added. Rebuilds stay incremental
# without a skeleton layer: cargo's target directory and the crate registry are
# cache mounts that outlive this layer, so a source change recompiles only the
# crates that changed (README, "Deploying the tracker", has the measured times).
# Crates are downloaded once, into the registry cache mount, by the build itself.
COPY . .
# Release profile for the image: no debug info at all, symbols stripped (the
# workspace's release profile keeps line tables for local profiling).
ENV CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,id=sbcftp-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=sbcftp-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p sbcftp-tracker \
    && install -D -m 0755 target/release/sbcftp-tracker /out/sbcftp-tracker

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 sbcftp \
    && useradd --system --uid 10001 --gid sbcftp --home-dir /var/lib/sbcftp --create-home sbcftp
COPY --from=build /out/sbcftp-tracker /usr/local/bin/sbcftp-tracker
# Numeric, so that a runtime can check it is not root without reading /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/sbcftp
# The default database is SQLite in /var/lib/sbcftp. There is no VOLUME line:
# it would leave an unused anonymous volume behind every MariaDB/PostgreSQL
# tracker. A SQLite deployment mounts a named volume there (README).
ENV SBCFTP_LISTEN=0.0.0.0:8080 \
    SBCFTP_DATABASE_URL=sqlite:///var/lib/sbcftp/sbcftp-tracker.db?mode=rwc \
    RUST_LOG=info
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/sbcftp-tracker"]
