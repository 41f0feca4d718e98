//! The `tumbling-window` aggregator plugin.
//!
//! The algorithm is [`window`], plain Rust tested natively; [`component`] (built only for wasm)
//! converts between it and the WIT `aggregator` interface.

pub mod window;

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, reason = "the exports wit-bindgen generates are FFI")]
mod component;
