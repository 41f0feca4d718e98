//! The `novelty` detector plugin.
//!
//! The algorithm is [`novelty`], plain Rust tested natively; for wasm builds, `export_detector!`
//! makes it a component exporting the WIT `detector` interface.

pub mod novelty;
mod residual;

#[cfg(target_arch = "wasm32")]
iotstream_plugin_sdk::export_detector!(crate::novelty::Novelty);
