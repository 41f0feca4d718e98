# Builds iotstream (host, plugins, dashboard) with the project's own xtask, then ships the binary
# with the plugins and the dashboard on a slim Debian.
FROM rust:1.95-bookworm AS build
# npm: the xtask takes the dashboard's chart library (ECharts) from the npm registry, pinned and checked.
RUN apt-get update && apt-get install -y --no-install-recommends g++ make pkg-config zlib1g-dev npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN rustup target add wasm32-wasip2 wasm32-unknown-unknown && cargo xtask build --release

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/iotstream /usr/local/bin/iotstream
COPY --from=build /src/dist/plugins /plugins
COPY --from=build /src/dist/dashboard /dashboard
ENV IOTSTREAM_PLUGINS=/plugins IOTSTREAM_DASHBOARD=/dashboard IOTSTREAM_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["iotstream"]
CMD ["run"]
