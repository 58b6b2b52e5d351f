# syntax=docker/dockerfile:1

# myelectricaldata-vm-exporter, for linux/amd64, linux/arm64 and linux/arm/v7:
#
#   docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7 \
#     -t myelectricaldata-vm-exporter .
#
# The build stage runs on the build machine's own platform ($BUILDPLATFORM)
# and cross-compiles with tonistiigi/xx (clang + lld, the target's glibc
# from Debian's multiarch packages): no emulation of the cargo build. The
# binary links against glibc only (TLS is rustls with ring, no OpenSSL), so
# the final image is distroless/cc, Debian 12 like the build stage, running
# as an unprivileged user. See docs/deploy.md.

ARG RUST_VERSION=1
ARG XX_VERSION=1.6.1

FROM --platform=$BUILDPLATFORM tonistiigi/xx:${XX_VERSION} AS xx

FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-bookworm AS build
# The xx-* helper scripts, as xx's documentation copies them.
# hadolint ignore=DL3067
COPY --from=xx / /
# clang and lld compile ring's C and link for any target; llvm-ar archives
# the target's objects (the build machine's GNU ar may not know them).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang lld llvm file \
 && rm -rf /var/lib/apt/lists/*
ENV AR=llvm-ar
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
# Fetched once, before TARGETPLATFORM is declared: shared by every platform.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git/db \
    cargo fetch --locked

ARG TARGETPLATFORM
# The target's C library and libgcc (libc6-dev, libgcc-12-dev for armhf, arm64...).
RUN xx-apt-get install -y --no-install-recommends xx-c-essentials
# target/ is a cache shared by the platforms: each builds under target/<triple>/.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git/db \
    --mount=type=cache,target=/src/target,id=myelectricaldata-vm-exporter-target,sharing=locked \
    xx-cargo build --release --locked \
 && triple="$(xx-cargo --print-target-triple)" \
 && xx-verify "target/${triple}/release/myelectricaldata-vm-exporter" \
 && install -D -m 0755 "target/${triple}/release/myelectricaldata-vm-exporter" \
      /out/myelectricaldata-vm-exporter

# The binary alone, for a machine without Docker (a Raspberry Pi under systemd):
#   docker buildx build --platform linux/arm64 --target binary -o type=local,dest=dist .
FROM scratch AS binary
COPY --from=build /out/myelectricaldata-vm-exporter /

# The image: glibc, libgcc, CA certificates and tzdata; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="myelectricaldata-vm-exporter" \
      org.opencontainers.image.description="Keeps VictoriaMetrics an exact mirror of the MyElectricalData client's PostgreSQL tables" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /out/myelectricaldata-vm-exporter /usr/local/bin/myelectricaldata-vm-exporter
# /health and /metrics on every interface of the container (the daemon's
# own default is 127.0.0.1:9488); set it to "off" to disable the listener,
# but then the HEALTHCHECK below fails.
ENV VICTORIAMETRICS_HTTP_LISTEN_ADDR=0.0.0.0:9488
EXPOSE 9488
# distroless' "nonroot" user, by number so that runAsNonRoot can check it.
USER 65532:65532
# `health` GETs /health on VICTORIAMETRICS_HTTP_LISTEN_ADDR (0.0.0.0 is
# asked on loopback): exit 0 on 200, 1 otherwise. /health answers 503 when
# exports keep failing; start-period covers the wait for PostgreSQL.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/myelectricaldata-vm-exporter", "health"]
ENTRYPOINT ["/usr/local/bin/myelectricaldata-vm-exporter"]
CMD ["run"]
