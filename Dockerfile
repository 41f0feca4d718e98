# Builds iotstream (host, plugins, dashboard) with the project's own xtask, then ships the binary
# with the plugins and the dashboard on a slim Debian, as a user that is not root.
#
# Layers, slowest-changing first, so an edit to the code rebuilds only the last build step:
# 1. toolchain: apt packages, the Rust targets and the pinned tools (cargo-chef, wasm-bindgen-cli);
# 2. planner: cargo-chef's recipe, the workspace's manifests and lock file only;
# 3. build: the host's dependencies compiled from the recipe (the dependency-cache layer, rebuilt
#    only when a manifest or Cargo.lock changes), then the sources and `cargo xtask build`.
# host/tests/all/image.rs checks this file against the CLI, .dockerignore and docker-compose.yml.
FROM rust:1.95-bookworm AS toolchain
RUN apt-get update && apt-get install -y --no-install-recommends g++ make pkg-config zlib1g-dev libssl-dev npm \
    && rm -rf /var/lib/apt/lists/*
# Pinned: the same tools on every build. wasm-bindgen-cli must equal Cargo.lock's wasm-bindgen (the
# build checks it); it does not build with --locked (docs: TOOLCHAIN).
RUN cargo install cargo-chef --version 0.1.78 --locked
RUN cargo install wasm-bindgen-cli --version 0.2.130
WORKDIR /src
COPY rust-toolchain.toml ./
# The toolchain the file names, with its targets and components (rustup 1.28 installs it on request
# only, not on first use).
RUN rustup toolchain install && rustup show active-toolchain

FROM toolchain AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM toolchain AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --package iotstream --recipe-path recipe.json
COPY . .
RUN cargo xtask build --release

FROM debian:bookworm-slim
# libssl3: librdkafka's TLS and SASL; ca-certificates: the roots `ssl.ca.location` defaults to.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin iotstream
COPY --from=build /src/target/release/iotstream /usr/local/bin/iotstream
# Owned by the host's user: docker-compose.yml's plugins volume is filled from here (with this
# owner), and plugins dropped into it are written by that user.
COPY --from=build --chown=iotstream:iotstream /src/dist/plugins /plugins
COPY --from=build /src/dist/dashboard /dashboard
ENV IOTSTREAM_PLUGINS=/plugins IOTSTREAM_DASHBOARD=/dashboard IOTSTREAM_LISTEN=0.0.0.0:8080
USER iotstream
EXPOSE 8080
# /readyz of the host in this container (`iotstream health`'s default).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["iotstream", "health"]
ENTRYPOINT ["iotstream"]
CMD ["run"]
