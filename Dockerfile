# syntax=docker/dockerfile:1
# Gatehouse image: a static-enough Rust binary on distroless, running as non-root 65532.
#   docker build -t ghcr.io/gatehouse/gatehouse:0.1.0 .

FROM rust:1-bookworm AS build
# aws-lc-sys (rustls' crypto provider) builds its C sources with cmake. The profile-guided build
# (benches/loadtest/pgo) trains on the load benchmark's scenarios: nginx as the origin, wrk,
# h2load, curl, openssl and python3 drive them; llvm-profdata comes with rustup's llvm-tools,
# llvm-bolt (the post-link layout) with Debian's bolt-16.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake nginx wrk nghttp2-client curl openssl \
       util-linux python3 bolt-16 \
    && rm -rf /var/lib/apt/lists/* \
    && rustup component add llvm-tools
WORKDIR /src
# The whole context (.dockerignore keeps target/ and .git out): Cargo needs every target the
# manifest names (benches, tests) to exist even when it only builds the binary.
COPY . .
# Cache mounts keep the registry and build artefacts between builds; copy the binary out of the
# cached target dir so the next stage can see it. The training run needs two CPUs (the
# benchmark pins Gatehouse to one and its load to the other).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    benches/loadtest/pgo --no-install \
    && install -D -m 0755 target/pgo/gatehouse /out/gatehouse

# glibc + libgcc + CA certificates, no shell; the nonroot tag already runs as 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/gatehouse /gatehouse
USER 65532:65532
# http, https, admin (health, readiness, metrics)
EXPOSE 8080 8443 9090
ENTRYPOINT ["/gatehouse"]
