//! Guest-side building blocks shared by every iotstream plugin.
//!
//! A plugin crate keeps its algorithm in plain Rust and implements [`Detector`](detector::Detector)
//! or [`Aggregator`](aggregator::Aggregator) for it; `export_detector!` or `export_aggregator!`
//! makes it a component converting WIT types. This crate holds what every plugin needs between the
//! two and is tested natively:
//!
//! * [`aggregator`]: the [`Aggregator`](aggregator::Aggregator) trait an aggregator plugin
//!   implements, and the `export_aggregator!` macro that makes it a component,
//! * [`batch`]: a batch as the contract passes it, in columns, the same with its sensors resolved
//!   as a stage reads it, and a detector's answer in columns,
//! * [`catalog`]: the per-instance map from the sensor keys readings carry to the sensors' identities,
//! * [`config`]: strict JSON configuration (unknown keys are errors),
//! * [`contract`]: the version of the WIT contract, where Rust names it ([`CONTRACT_VERSION`],
//!   `contract_version!`) for the host and the plugins,
//! * [`float`]: `f64::max` and `f64::min` that a wasm build compiles to an instruction, not a call,
//! * [`detector`]: the [`Detector`](detector::Detector) trait a detector plugin implements, and the
//!   `export_detector!` macro that makes it a component,
//! * [`state`]: the versioned byte format of exported state,
//! * [`window`]: a sensor's rolling window whose capacity stops at its bound,
//! * `wit` (wasm builds only): the bindings of the WIT `types` interface, generated once here and
//!   shared by every plugin's own bindings (`with:` in `wit_bindgen::generate!`), with the conversions
//!   between them and this crate's types.

pub mod aggregator;
pub mod batch;
pub mod catalog;
pub mod config;
pub mod contract;
pub mod detector;
pub mod float;
pub mod state;
pub mod window;
#[cfg(target_os = "wasi")]
#[allow(unsafe_code, missing_docs, reason = "wit-bindgen generates FFI code without docs")]
pub mod wit;

pub use batch::{Batch, DetectionColumns, ResolvedBatch};
pub use catalog::{Catalog, CatalogMap, CatalogName, SensorIdentity, SensorMap, SensorType};
pub use config::parse_config;
pub use contract::CONTRACT_VERSION;
pub use state::{decode_state, encode_state};

/// Why a plugin refused its configuration, its state or an input. Plugins map it onto the WIT
/// `stage-error` variant of the same name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PluginError {
    /// The configuration is not valid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The state cannot be read by this plugin.
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// A reading or a sensor cannot be processed.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}
