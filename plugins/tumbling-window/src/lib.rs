//! The `tumbling-window` aggregator plugin.
//!
//! The algorithm is [`window`], plain Rust tested natively; `component` implements the SDK's
//! `Aggregator` trait for it, and for wasm builds `export_aggregator!` makes it a component
//! exporting the WIT `aggregator` interface.

pub mod window;

mod component;
