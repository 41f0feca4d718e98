//! The `zscore` detector plugin.
//!
//! The algorithm is [`zscore`], plain Rust tested natively; for wasm builds,
//! `export_detector!` makes it a component exporting the WIT `detector` interface.

pub mod zscore;

#[cfg(target_arch = "wasm32")]
iotstream_plugin_sdk::export_detector!(crate::zscore::ZScore);
