# Builds iotstream (host, plugins, dashboard) with the project's own xtask, then ships the binary
# with its built-in plugins and the dashboard on a slim Debian, as a user that is not root, with an
# empty drop-in plugins folder (/plugins) for the operator's own.
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
# /plugins: the drop-in plugins folder, empty and owned by the host's user (docker-compose.yml's
# volume there starts empty with this owner; plugins dropped in, and admin promotions, are written
# by that user).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin iotstream \
    && install -d -o iotstream -g iotstream -m 0755 /plugins
COPY --from=build /src/target/release/iotstream /usr/local/bin/iotstream
# The layout `cargo xtask install --prefix /usr/local` writes, where the binary finds them: the
# built-in plugins and the dashboard, owned by root, replaced by every new image (never in a volume,
# where an old copy would outlive an upgrade).
COPY --from=build /src/dist/plugins /usr/local/share/iotstream/plugins
COPY --from=build /src/dist/dashboard /usr/local/share/iotstream/dashboard
ENV IOTSTREAM_BUILTIN_PLUGINS=/usr/local/share/iotstream/plugins IOTSTREAM_PLUGINS=/plugins \
    IOTSTREAM_DASHBOARD=/usr/local/share/iotstream/dashboard IOTSTREAM_LISTEN=0.0.0.0:8080
USER iotstream
EXPOSE 8080
# /readyz of the host in this container (`iotstream health`'s default).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["iotstream", "health"]
ENTRYPOINT ["iotstream"]
CMD ["run"]
