# syntax=docker/dockerfile:1

# myelectricaldata-vm-exporter, for linux/amd64, linux/arm64 and linux/arm/v7:
#
#   docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7 \
#     -t myelectricaldata-vm-exporter .
#
# The build stage runs on the build machine's own platform ($BUILDPLATFORM),
# Debian 12 like the final image, and runs scripts/cross-build for the
# target platform: the very steps of the Debian packages (scripts/package)
# and of CI's ARM builds (scripts/test-cross), with Debian's Rust (rustc-web
# from bookworm-security) and gcc cross compilers, no emulation of the build.
# scripts/check-deploy checks that this stage runs that script and nothing
# else. The binary links against glibc only (TLS is rustls with ring, no
# OpenSSL), so the final image is distroless/cc, running as an unprivileged
# user. See docs/deploy.md.

# The binary comes from the build stage below (the default), or, with
# `--build-arg BINARY=prebuilt`, from prebuilt/myelectricaldata-vm-exporter
# in the build context: one built beforehand for the same platform by
# scripts/package (CI's scripts/test-container builds the image that way,
# rather than compiling a second time).
ARG BINARY=build

FROM --platform=$BUILDPLATFORM debian:bookworm AS build
WORKDIR /src
COPY scripts/cross-build ./scripts/cross-build
ARG TARGETPLATFORM
# Debian's Rust, the target's standard library, gcc and glibc: a layer of
# its own, kept while only the sources change.
RUN scripts/cross-build --install-only "$TARGETPLATFORM"
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY prices/regulated.csv ./prices/regulated.csv
COPY benches ./benches
# target/ is a cache shared by the platforms: each builds under target/cross/<triple>/.
RUN --mount=type=cache,target=/root/.cargo/registry \
    --mount=type=cache,target=/root/.cargo/git/db \
    --mount=type=cache,target=/src/target,id=myelectricaldata-vm-exporter-target,sharing=locked \
    scripts/cross-build --profile release --out /out "$TARGETPLATFORM"

FROM scratch AS prebuilt
COPY prebuilt/myelectricaldata-vm-exporter /out/myelectricaldata-vm-exporter

# hadolint ignore=DL3006
FROM ${BINARY} AS chosen

# The binary alone, for a machine without Docker (a Raspberry Pi under systemd):
#   docker buildx build --platform linux/arm64 --target binary -o type=local,dest=dist .
FROM scratch AS binary
COPY --from=chosen /out/myelectricaldata-vm-exporter /

# The image: glibc, libgcc, CA certificates and tzdata; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="myelectricaldata-vm-exporter" \
      org.opencontainers.image.description="Keeps VictoriaMetrics an exact mirror of the MyElectricalData client's PostgreSQL tables" \
      org.opencontainers.image.licenses="MIT"
COPY --from=chosen /out/myelectricaldata-vm-exporter /usr/local/bin/myelectricaldata-vm-exporter
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
