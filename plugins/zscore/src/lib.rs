//! The `zscore` detector plugin.
//!
//! The algorithm is [`zscore`], plain Rust tested natively; `component` (built only for wasm)
//! converts between it and the WIT `detector` interface.

pub mod zscore;

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, reason = "the exports wit-bindgen generates are FFI")]
mod component;
