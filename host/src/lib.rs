//! iotstream: a real-time IoT monitoring pipeline. Sensor readings arrive on Kafka, every
//! processing stage is a WebAssembly component plugin, results land in PostgreSQL and stream live
//! to a dashboard.
//!
//! # Layout
//! The data path, in the order a message travels it (ARCHITECTURE.md has the whole map):
//! * [`kafka`]: the source (consumer, canonical batches, the batch log's replay), the producer and
//!   the embedded broker.
//! * [`reading`]: the message format, decoding and validation.
//! * [`pipeline`]: the loop from a Kafka batch to a committed transaction.
//! * [`plugins`]: the wasmtime component host that runs the stages.
//! * [`store`]: PostgreSQL: rows, the batch writer, checkpoints, the API's queries.
//! * [`http`]: the live view, the JSON API, server-sent events, Prometheus and the dashboard.
//!
//! Around it:
//! * [`app`]: `iotstream run`, the one start-up path and the wiring of the above;
//!   [`shutdown`]: the signals that stop it.
//! * [`simulate`]: the sensor fleet simulator (also the embedded demo's producer).
//! * [`commands`]: every other subcommand (benchmarks, replay, plugin tools).
//! * [`cli`] and [`config`]: the command line and `iotstream run`'s configuration;
//!   [`config_file`]: the TOML file under the environment and the flags, and `iotstream config`.

pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod config_file;
pub mod http;
pub mod kafka;
pub mod pipeline;
pub mod plugins;
pub mod reading;
pub mod shutdown;
pub mod simulate;
pub mod store;
