# Stratum's server image. Build stage: the same `cargo build` CI runs; run
# stage: a slim image with only the binary. Data lives in /data (a volume),
# the server listens on 0.0.0.0:50051 and stops gracefully on SIGTERM.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin lse_server

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home stratum \
    && mkdir /data \
    && chown stratum /data
COPY --from=build /src/target/release/lse_server /usr/local/bin/lse_server
USER stratum
ENV LSE_HOST=0.0.0.0 \
    LSE_PORT=50051 \
    LSE_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 50051
STOPSIGNAL SIGTERM
ENTRYPOINT ["lse_server"]
