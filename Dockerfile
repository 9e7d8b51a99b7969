# Multi-stage build of every platform binary. The Swagger UI is vendored by a crates.io
# package, so the build needs crates.io only.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir /out && cp target/release/maas target/release/maas-api target/release/maas-worker target/release/maas-agent /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app maas
WORKDIR /app
COPY --from=build /out/ /usr/local/bin/
COPY config/ /app/config/
USER maas
ENV MAAS_ENV=production MAAS__SERVER__HOST=0.0.0.0
EXPOSE 8080
CMD ["maas-api"]
