//! The `records-minutes` aggregator: a test plugin built against contract **0.1.0**
//! (`wit/v0.1.0/pipeline.wit`: readings as a list of records), so that the host's bindings of
//! that version run a real aggregator. The SDK builds the current version only, so this crate
//! uses the 0.1.0 WIT directly. `cargo xtask plugins` builds it into `dist/test-plugins/`.
//!
//! [`minutes`] holds the algorithm, tested natively; `component` (wasm builds) converts the
//! contract's records.

pub mod minutes;

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, missing_docs, reason = "wit-bindgen generates FFI code without docs")]
mod component;
