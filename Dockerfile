# syntax=docker/dockerfile:1
# Build: docker build -t leadscore .
FROM rust:1-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin leadscore \
 && cp target/release/leadscore /usr/local/bin/leadscore

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin leadscore
COPY --from=builder /usr/local/bin/leadscore /usr/local/bin/leadscore
COPY deploy/examples/leadscore.toml /etc/leadscore/leadscore.toml
USER 10001:10001
EXPOSE 9464
ENTRYPOINT ["leadscore"]
CMD ["run", "--config", "/etc/leadscore/leadscore.toml"]
