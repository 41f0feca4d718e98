//! The host's integration tests, one binary (as wasmtime's `tests/all`): the real plugins built by
//! `cargo xtask build`, the real PostgreSQL (`DATABASE_URL`, a role that may create databases:
//! `#[sqlx::test]` gives each test its own) and a real Kafka protocol (librdkafka's mock cluster).

mod support;

mod admin;
mod api_limits;
mod batch_log;
mod batch_order;
mod cluster;
mod compose;
mod config;
mod connections;
mod dashboard;
mod dashboard_live;
mod dashboard_tabs;
mod dead_letters;
mod detector_models;
mod dropin;
mod e2e;
mod evaluate;
mod exposure;
mod faults;
mod fresh_batches;
mod history;
mod hot_swap;
mod iforest;
mod image;
mod installed;
mod isolation;
mod metrics;
mod native_parity;
mod newest;
mod partitions;
mod plugin_new;
mod plugins;
mod poison;
mod probes;
mod process;
mod python;
mod quality;
mod recycling;
mod replay;
mod sandbox;
mod scale_out;
mod shutdown;
mod source;
mod tls;
mod windows;
