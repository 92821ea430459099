# Stratum's server image. Build stage: the same `cargo build` CI runs; run
# stage: a slim image with only the binary. Data lives in /data (a volume),
# the server listens on 0.0.0.0:50051 and stops gracefully on SIGTERM.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin lse_server

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home stratum \
    && mkdir -m 0700 /data \
    && chown stratum /data
COPY --from=build /src/target/release/lse_server /usr/local/bin/lse_server
USER stratum
# A container must listen on 0.0.0.0 for its port to be published, and the
# server refuses a non-loopback address without TLS and tokens unless told
# otherwise: this image allows it (publish the port on the host's loopback,
# as docker-compose.yml does). For a network others can reach, mount a
# certificate, a key and a token file, set LSE_TLS_CERT, LSE_TLS_KEY and
# LSE_TOKEN_FILE, and set LSE_ALLOW_INSECURE_REMOTE=false.
ENV LSE_HOST=0.0.0.0 \
    LSE_PORT=50051 \
    LSE_DATA_DIR=/data \
    LSE_ALLOW_INSECURE_REMOTE=true
VOLUME ["/data"]
EXPOSE 50051
STOPSIGNAL SIGTERM
ENTRYPOINT ["lse_server"]
