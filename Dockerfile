# syntax=docker/dockerfile:1
# Build: docker build -t platform-server .
# Run:   docker run -p 8007:8007 -v platform-data:/data platform-server

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, from the manifests alone, so source edits reuse this layer.
COPY Cargo.toml Cargo.lock ./
COPY migration/Cargo.toml migration/Cargo.toml
RUN mkdir -p src migration/src \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs migration/src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src migration/src
COPY config config
COPY migration migration
COPY src src
# Touch so cargo rebuilds our crates rather than the stubs above.
RUN touch src/main.rs src/lib.rs migration/src/lib.rs \
 && cargo build --release --locked --bin platform-server \
 && mkdir -p /out/data \
 && cp target/release/platform-server /out/platform-server

# glibc and libgcc only: TLS is rustls and SQLite is compiled in.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/platform-server /usr/local/bin/platform-server
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data
ENV SQLITE_PATH=/data/platform.db \
    BIND_ADDRESS=0.0.0.0 \
    PORT=8007 \
    METRICS_PORT=9464
USER 65532:65532
VOLUME /data
EXPOSE 8007 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/platform-server", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/platform-server"]
CMD ["serve"]
