//! The `isolation-forest` detector plugin.
//!
//! [`forest`] is the Isolation Forest itself (scikit-learn's semantics), [`detector`] the online
//! detector built on it (the seed's features, one model per sensor type, periodic retraining); both
//! are plain Rust tested natively. `component` (built only for wasm) converts between the detector
//! and the WIT `detector` interface.

pub mod detector;
pub mod forest;

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, reason = "the exports wit-bindgen generates are FFI")]
mod component;
