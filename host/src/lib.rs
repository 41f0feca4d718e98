//! iotstream: a real-time IoT monitoring pipeline. Sensor readings arrive on Kafka, every
//! processing stage is a WebAssembly component plugin, results land in PostgreSQL and stream live
//! to a dashboard.
//!
//! # Layout
//! * [`reading`]: the message format, decoding and validation.
//! * [`kafka`]: the consumer, the producer and the embedded broker.
//! * [`plugins`]: the wasmtime component host that runs the stages.
//! * [`pipeline`]: the loop from a Kafka batch to a committed transaction.
//! * [`store`]: PostgreSQL schema, writes and queries.
//! * [`live`]: the in-memory live view; [`api`]: HTTP, the live stream and the dashboard.
//! * [`simulate`]: the sensor fleet simulator; [`bench`]: the whole-pipeline benchmark;
//!   [`bench_plugins`]: each plugin natively and as `.wasm`; [`bench_forest`]: the forest both ways;
//!   [`replay`]: one detector over a recorded series; [`iforest`]: the forest on any tabular CSV;
//!   [`plugin_check`]: a plugin author's check of a component; [`plugin_new`]: a new plugin crate.
//! * [`prometheus`]: the plugins' metrics in Prometheus's text format, for `GET /metrics`.
//! * [`cli`], [`config`] and [`app`]: the command line, `iotstream run`'s configuration, and wiring.

pub mod api;
pub mod app;
pub mod bench;
pub mod bench_forest;
pub mod bench_plugins;
pub mod cli;
pub mod config;
pub mod iforest;
pub mod kafka;
pub mod live;
pub mod pipeline;
pub mod plugin_check;
pub mod plugin_new;
pub mod plugins;
pub mod prometheus;
pub mod reading;
pub mod replay;
pub mod simulate;
pub mod store;
