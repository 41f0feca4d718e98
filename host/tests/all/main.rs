//! The host's integration tests, one binary (as wasmtime's `tests/all`): the real plugins built by
//! `cargo xtask build`, the real PostgreSQL (`DATABASE_URL`) and a real Kafka protocol (librdkafka's
//! mock cluster).

mod support;

mod plugins;
